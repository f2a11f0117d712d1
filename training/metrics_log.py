"""Metrics to ``RUN/metrics.csv`` (appended on resume) and TensorBoard (``RUN/tb``).

On resume from step S, rows and TensorBoard events after S (written by the interrupted run after its last
checkpoint) are dropped first, so the resumed run does not repeat them. A full disk is reported as such."""
from __future__ import annotations

import csv
import errno
import os
from pathlib import Path
from typing import Any

from .checkpoint import DiskFullError, disk_full_message

__all__ = ["MetricsLogger", "COLUMNS"]

COLUMNS = ["step", "epoch", "split", "lr", "loss", "mlm_loss", "tp_loss", "top1", "top5", "images_per_s",
           "failed", "skipped", "truncated", "samples", "top1_shuffled", "visual_top1", "visual_top1_shuffled",
           "visual_chance", "image_use_gap"]


class MetricsLogger:
    """Writes one CSV row per call (fixed columns, blanks for missing values) and TensorBoard scalars."""

    def __init__(self, run_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True,
                 resume_step: int = 0) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.csv"
        self.tb = None
        if not enabled:
            return
        with _disk_errors(self.path):
            if not self.path.exists():
                with self.path.open("w", newline="") as f:
                    csv.writer(f).writerow(COLUMNS)
            else:
                _drop_rows_after(self.path, resume_step)
        if tensorboard:
            try:  # tensorboard is optional: a run without it still writes metrics.csv
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                return
            tb_dir = Path(run_dir) / "tb"
            with _disk_errors(tb_dir):
                self.tb = SummaryWriter(str(tb_dir), purge_step=resume_step + 1 if resume_step else None)

    def log(self, step: int, split: str, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": step, "split": split, **values}
        with _disk_errors(self.path):
            with self.path.open("a", newline="") as f:
                csv.writer(f).writerow([_fmt(row.get(c)) for c in COLUMNS])
            if self.tb is not None:
                for k, v in values.items():
                    if isinstance(v, (int, float)) and k not in ("epoch",):
                        self.tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            with _disk_errors(self.path.parent / "tb"):
                self.tb.flush()
                self.tb.close()


class _disk_errors:
    """Turns ENOSPC/EDQUOT into :class:`~.checkpoint.DiskFullError` naming the path."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, tb) -> bool:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(disk_full_message(self.path)) from err
        return False


def _drop_rows_after(path: Path, step: int) -> None:
    """Rewrite ``path`` without the rows logged after ``step`` (atomically; untouched if there are none)."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    keep = [rows[0]] + [r for r in rows[1:] if not (r and r[0].isdigit() and int(r[0]) > step)]
    if len(keep) == len(rows):
        return
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with tmp.open("w", newline="") as f:
            csv.writer(f).writerows(keep)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)
