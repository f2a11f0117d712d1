"""Metrics to ``RUN/metrics.csv`` (appended on resume) and TensorBoard (``RUN/tb``)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

__all__ = ["MetricsLogger", "COLUMNS"]

COLUMNS = ["step", "epoch", "split", "lr", "loss", "mlm_loss", "tp_loss", "top1", "top5", "images_per_s",
           "failed", "skipped", "truncated", "samples", "visual_top1", "visual_chance", "majority_baseline"]


class MetricsLogger:
    """Writes one CSV row per call (fixed columns, blanks for missing values) and TensorBoard scalars."""

    def __init__(self, run_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.csv"
        self.tb = None
        if not enabled:
            return
        if not self.path.exists():
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(COLUMNS)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(Path(run_dir) / "tb"))
            except ImportError:
                self.tb = None

    def log(self, step: int, split: str, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": step, "split": split, **values}
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(c)) for c in COLUMNS])
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and k not in ("epoch",):
                    self.tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)
