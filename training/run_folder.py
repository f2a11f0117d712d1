"""The run folder: choose it, create it, and leave it as found when a start is refused during set-up."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from . import checkpoint as ckpt
from .config import Config, load_config
from .distributed import DistInfo, barrier, broadcast_object, is_main, say

__all__ = ["RunFolderError", "prepare_run_dir", "open_run_dir", "undo_setup", "read_run_config"]


class RunFolderError(RuntimeError):
    """The run folder cannot be used (it exists and --resume was not given, ...)."""


def prepare_run_dir(out: str | Path | None, name: str, resume: bool, info: DistInfo) -> tuple[Path, bool]:
    """Choose the run folder (:func:`open_run_dir` creates it). Returns (folder, resuming). An existing non-empty
    folder without ``--resume`` is refused; ``--resume`` on a folder without checkpoints starts a new run there."""
    if out is None:
        if resume:
            raise RunFolderError("--resume needs --out RUN_DIR (the run folder to continue)")
        stamp = broadcast_object(time.strftime("%Y%m%d-%H%M%S"), info)
        out = Path("runs") / f"{name}-{stamp}"
    run_dir = Path(out)
    has_ckpt = bool(ckpt.list_checkpoints(run_dir / "checkpoints"))
    non_empty = run_dir.exists() and any(run_dir.iterdir())
    if resume and has_ckpt:
        return run_dir, True
    if resume and non_empty and not (run_dir / "config.yaml").exists():
        raise RunFolderError(f"{run_dir} is not empty and holds no training run (no config.yaml); "
                             "choose another --out")
    if not resume and non_empty:
        raise RunFolderError(f"run folder {run_dir} exists and is not empty; continue it with --resume "
                             "or choose another --out (nothing is overwritten)")
    # a new run, or --resume of a run killed before its first checkpoint (started over in place)
    return run_dir, False


def open_run_dir(run_dir: Path, info: DistInfo) -> set[Path] | None:
    """Create the run folder; return what it held before (None: it did not exist), for :func:`undo_setup`."""
    before = set(run_dir.iterdir()) if run_dir.is_dir() else None
    barrier(info)
    if is_main(info):
        run_dir.mkdir(parents=True, exist_ok=True)
        stale = ckpt.remove_stale_temps(run_dir / "checkpoints")
        if stale:
            say(f"removed {len(stale)} temporary file(s) left by an interrupted checkpoint write: "
                f"{', '.join(p.name for p in stale)}", info)
    barrier(info)
    return before


def undo_setup(run_dir: Path, before: set[Path] | None, info: DistInfo) -> None:
    """A run refused during set-up leaves the folder as it found it (removes only what this start created)."""
    if not is_main(info) or not run_dir.is_dir():
        return
    for p in set(run_dir.iterdir()) - (before or set()):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
    if before is None and not any(run_dir.iterdir()):
        run_dir.rmdir()


def read_run_config(run_dir: str | Path) -> Config:
    """The typed config a run was trained with (``RUN/config.yaml``, keys added since filled from the defaults);
    the one reader of a run's config for export, inference and evaluation."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not an icmlm-train run folder (no config.yaml); give the folder "
                                "that `icmlm-train --out` wrote")
    return load_config(config_file=path)
