"""Checkpoints you can trust: each carries a SHA-256 of its contents (checked on load), is written atomically
(temp file + rename; the temp file is removed on failure, stale ones at the next start), the last K are kept,
and ``last`` resolves to the newest one that loads and verifies."""
from __future__ import annotations

import errno
import hashlib
import io
import os
import pickle
import random
import re
from pathlib import Path
from typing import IO, Any, Callable

import numpy as np
import torch

__all__ = ["CheckpointError", "DiskFullError", "save_checkpoint", "list_checkpoints", "resolve_checkpoint",
           "load_checkpoint", "load_newest_good", "remove_stale_temps", "state_digest", "nonfinite_tensors",
           "rng_state", "set_rng_state"]

_NAME = re.compile(r"^ckpt_(\d{7,})\.pt$")
_TEMP = re.compile(r"^\.ckpt_\d{7,}\.pt\.tmp\d+$")
_DIGEST_KEY = "sha256"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used (unreadable, truncated, tampered with, refused) or cannot be written."""


class DiskFullError(RuntimeError):
    """The disk filled up while writing a file of the run."""


def disk_full_message(path: str | Path, what: str = "writing") -> str:
    """One line for ENOSPC/EDQUOT: what was being written and what to do."""
    return (f"no space left on the device {what} {path}; free some space (or point --out at another disk) and "
            f"continue with --resume")


def list_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """Checkpoint files in step order."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def remove_stale_temps(ckpt_dir: str | Path) -> list[Path]:
    """Delete the temporary files left by checkpoint writes that were killed; returns what was removed."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    stale = [p for p in d.iterdir() if _TEMP.match(p.name)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def state_digest(state: dict[str, Any]) -> str:
    """SHA-256 over every value of ``state`` (tensor bytes, dtypes, shapes, keys), the digest entry excluded."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != _DIGEST_KEY})
    return h.hexdigest()


def _feed(h, obj: Any) -> None:
    if torch.is_tensor(obj):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for k, v in obj.items():
            h.update(repr(k).encode())
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    else:
        h.update(f"V{obj!r}".encode())


def nonfinite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or Inf."""
    return [k for k, v in tensors.items()
            if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _open_tmp(path: Path) -> IO[bytes]:
    """The file object checkpoints are written through (the filesystem boundary)."""
    return open(path, "wb")


def save_checkpoint(state: dict[str, Any], ckpt_dir: str | Path, step: int, keep_last: int = 3) -> Path:
    """Write ``ckpt_{step:07d}.pt`` (with its digest) atomically, then delete all but the newest ``keep_last``.

    Refuses a state whose ``model`` weights are not finite. On any failure the temporary file is removed; a full
    disk raises :class:`DiskFullError` naming the file."""
    bad = nonfinite_tensors(state.get("model", {}))
    if bad:
        raise CheckpointError(f"not writing the step-{step} checkpoint: the weights hold NaN/Inf ({', '.join(bad[:3])}"
                              f"{', ...' if len(bad) > 3 else ''}); the earlier checkpoints are kept")
    d = Path(ckpt_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"ckpt_{step:07d}.pt"
    tmp = d / f".{path.name}.tmp{os.getpid()}"
    buf = io.BytesIO()
    torch.save({**state, _DIGEST_KEY: state_digest(state)}, buf)
    try:
        with _open_tmp(tmp) as f:
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(disk_full_message(path, "writing the checkpoint")) from e
        raise
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
    """Load a checkpoint written by :func:`save_checkpoint` and check its digest.

    ``weights_only=True``: no code is executed. Raises :class:`CheckpointError` naming the file when it is empty,
    truncated, not a checkpoint, refused by the safe loader, differs from its digest or holds NaN/Inf weights."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
        state = torch.load(path, map_location=map_location, weights_only=True)
    except CheckpointError:
        raise
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"checkpoint {path} was refused by the safe loader (it holds objects other than "
                              f"tensors and plain data, so icmlm-train did not write it): {_first(e)}") from e
    except Exception as e:  # torch.load on damaged bytes raises many types (EOFError, RuntimeError, KeyError, ...)
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated or damaged): "
                              f"{type(e).__name__}: {_first(e)}") from e
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"checkpoint {path} is not an icmlm-train checkpoint (no 'model' entry)")
    want = state.pop(_DIGEST_KEY, None)
    if want is not None and state_digest(state) != want:
        raise CheckpointError(f"checkpoint {path} does not match its digest (bytes changed after it was written)")
    bad = nonfinite_tensors(state["model"]) if isinstance(state["model"], dict) else []
    if bad:
        raise CheckpointError(f"checkpoint {path} holds non-finite (NaN/Inf) weights ({', '.join(bad[:3])}"
                              f"{', ...' if len(bad) > 3 else ''}); use an earlier checkpoint")
    return state


def _first(e: BaseException) -> str:
    """The first sentence of an exception's message (torch's run on for lines)."""
    text = (str(e).strip().splitlines() or [""])[0]
    return text.split(". ")[0].rstrip(".")


def load_newest_good(ckpt_dir: str | Path, warn: Callable[[str], None] = print, *, set_aside: bool = True
                     ) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint that loads and verifies. Each bad newer one is named through ``warn`` and (with
    ``set_aside``) renamed to ``<name>.bad`` once a good one is found: kept, never deleted, no longer counted.
    Raises :class:`CheckpointError` naming every file if none is good (then nothing is renamed)."""
    ckpts = list_checkpoints(ckpt_dir)
    if not ckpts:
        raise FileNotFoundError(f"no checkpoints in {ckpt_dir}")
    bad: list[tuple[Path, str]] = []
    for p in reversed(ckpts):
        try:
            state = load_checkpoint(p)
        except CheckpointError as e:
            bad.append((p, str(e)))
            continue
        for q, why in bad:
            note = ""
            if set_aside and q.exists():
                os.replace(q, q.with_name(q.name + ".bad"))
                note = f"; renamed it to {q.name}.bad"
            warn(f"warning: {why}{note}; resuming from {p.name} instead")
        return p, state
    raise CheckpointError("no usable checkpoint in " + str(ckpt_dir) + ": " + "; ".join(w for _, w in bad) +
                          ". Start a new run (another --out) or restore a checkpoint copy")


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
