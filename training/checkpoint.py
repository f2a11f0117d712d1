"""Checkpoints: written atomically (temp file + rename), the last K kept, ``last`` resolved by step number."""
from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["save_checkpoint", "list_checkpoints", "resolve_checkpoint", "load_checkpoint", "rng_state",
           "set_rng_state"]

_NAME = re.compile(r"^ckpt_(\d{7,})\.pt$")


def list_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """Checkpoint files in step order."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(state: dict[str, Any], ckpt_dir: str | Path, step: int, keep_last: int = 3) -> Path:
    """Write ``ckpt_{step:07d}.pt`` atomically, then delete all but the newest ``keep_last``."""
    d = Path(ckpt_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"ckpt_{step:07d}.pt"
    tmp = d / f".{path.name}.tmp{os.getpid()}"
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    if keep_last > 0:
        for old in list_checkpoints(d)[:-keep_last]:
            old.unlink(missing_ok=True)
    return path


def resolve_checkpoint(run_dir: str | Path, checkpoint: str | int | Path = "last") -> Path:
    """``"last"`` → newest checkpoint of the run; an int → that step; a path → itself."""
    run_dir = Path(run_dir)
    if isinstance(checkpoint, Path) or (isinstance(checkpoint, str) and checkpoint.endswith(".pt")):
        p = Path(checkpoint)
        p = p if p.is_absolute() or p.exists() else run_dir / "checkpoints" / p
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint {p} not found")
        return p
    ckpts = list_checkpoints(run_dir / "checkpoints")
    if not ckpts:
        raise FileNotFoundError(f"no checkpoints in {run_dir / 'checkpoints'}; is {run_dir} a training run folder?")
    if checkpoint == "last":
        return ckpts[-1]
    want = f"ckpt_{int(checkpoint):07d}.pt"
    for p in ckpts:
        if p.name == want:
            return p
    raise FileNotFoundError(f"no checkpoint for step {checkpoint} in {run_dir}; have {[p.name for p in ckpts]}")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no code is executed)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states."""
    st = {"python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
          "numpy": np.random.get_state()[1].tolist() + [int(np.random.get_state()[2])],
          "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    py = st["python"]
    random.setstate((py[-2], tuple(py[:-2]), py[-1]))
    npst = np.random.get_state()
    np.random.set_state((npst[0], np.array(st["numpy"][:-1], dtype=np.uint32), st["numpy"][-1], 0, 0.0))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])
