"""What stops a run that cannot progress, with a message that says what to change: too many samples failing to
load, NaN/Inf steps (skipped and counted; too many in a row stop the run), and samples that never give an
optimizer step (e.g. no caption holds a tag word)."""
from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from . import checkpoint as ckpt
from .config_sections import RunSection, TrainSection
from .distributed import DistInfo, all_reduce_sum, is_main

__all__ = ["DataFailureError", "NonFiniteError", "NoProgressError", "Guards", "check_failures_at_end"]

log = logging.getLogger("icmlm-train")


class DataFailureError(RuntimeError):
    """Too many samples failed to load."""


class NonFiniteError(RuntimeError):
    """Too many optimizer steps in a row had a NaN/Inf loss or gradient."""


class NoProgressError(RuntimeError):
    """Too many samples in a row gave no optimizer step (all skipped or failed)."""


def _by(counters: Counter, prefix: str) -> dict[str, int]:
    return {k[len(prefix):]: v for k, v in counters.items() if k.startswith(prefix)}


def check_failures_at_end(counters: Counter | dict, max_failure_rate: float, *, during: bool = False) -> None:
    """Raise :class:`DataFailureError` when more than ``max_failure_rate`` of the samples read failed to load.

    During a run this is judged once ``run.failure_min_samples`` were read; a run that ends before that is judged
    at its end on what it read (its checkpoints are kept)."""
    seen, failed = counters.get("seen", 0), counters.get("failed", 0)
    if not seen or failed <= max_failure_rate * seen:
        return
    when = "" if during else " by the end of the run (fewer than run.failure_min_samples were read)"
    raise DataFailureError(
        f"{failed} of {seen} samples failed to load{when} ({failed / seen:.1%} > run.max_failure_rate="
        f"{max_failure_rate}); by reason: {_by(Counter(counters), 'failed_')}. Fix the data or raise "
        "run.max_failure_rate.")


class Guards:
    """Counts what the data gave (``counters``: seen, failed, skipped, truncated, by reason) and stops the run
    with one of the errors above, as the config's ``run`` and ``train`` sections say."""

    def __init__(self, run: RunSection, train: TrainSection, accum_steps: int, info: DistInfo,
                 counters: Counter) -> None:
        self.info, self.counters, self.max_bad = info, counters, train.max_nonfinite_steps
        self.max_failure_rate, self.failure_min = run.max_failure_rate, run.failure_min_samples
        per_step = train.batch_size * info.world_size * accum_steps
        self.max_idle = max(train.max_idle_samples, 2 * per_step)
        self.bad_loss, self.bad_in_row, self.seen_at_step = False, 0, counters["seen"]

    def usable(self, batch: dict[str, Any], tags: list[str] | None) -> bool:
        """Count a collated batch on every rank; False when some rank has nothing usable in it (every rank then
        skips it). Raises :class:`DataFailureError` / :class:`NoProgressError`."""
        c = self.counters
        flags = all_reduce_sum([float(batch["n"] == 0), sum(batch["errors"].values()), batch["n_seen"],
                                sum(batch["skipped"].values()), batch["truncated"]], self.info)
        for i, key in enumerate(("failed", "seen", "skipped", "truncated"), start=1):
            c[key] += int(flags[i])
        for k, v in batch["errors"].items():
            c[f"failed_{k}"] += v
        for k, v in batch["skipped"].items():
            c[f"skipped_{k}"] += v
        if batch["error_details"] and is_main(self.info) and c["failed"] <= 5:
            log.warning("skipped bad sample(s): %s", "; ".join(batch["error_details"]))
        if c["seen"] >= self.failure_min:
            check_failures_at_end(c, self.max_failure_rate, during=True)
        self.check_progress(tags)
        return flags[0] == 0

    def _by(self, prefix: str) -> dict[str, int]:
        return _by(self.counters, prefix)

    def skip_step(self, grad_norm: torch.Tensor | None, step: int, lr: float, run_dir: Path) -> bool:
        """True when this optimizer step must be skipped (non-finite loss or gradient on any rank)."""
        bad = self.bad_loss or (grad_norm is not None and not math.isfinite(float(grad_norm)))
        self.bad_loss = False
        if all_reduce_sum([float(bad)], self.info)[0] == 0:
            return False
        self.counters["nonfinite_steps"] += 1
        self.bad_in_row += 1
        if is_main(self.info) and self.bad_in_row == 1:
            log.warning("non-finite (NaN/Inf) loss or gradient at step %d (lr %.3g): step skipped, weights unchanged",
                        step + 1, lr)
        if self.bad_in_row >= self.max_bad:
            good = ckpt.list_checkpoints(run_dir / "checkpoints")
            raise NonFiniteError(
                f"{self.bad_in_row} optimizer steps in a row had a non-finite (NaN/Inf) loss or gradient "
                f"(train.max_nonfinite_steps={self.max_bad}; from step {step + 1}, lr {lr:.3g}); stopped without "
                f"writing a checkpoint. Last checkpoint: {good[-1] if good else 'none'}. Lower optim.lr, set "
                f"optim.grad_clip, or check the data")
        return True

    def stepped(self) -> None:
        """An optimizer step was applied."""
        self.bad_in_row, self.seen_at_step = 0, self.counters["seen"]

    def check_progress(self, tags: list[str] | None) -> None:
        """Raise :class:`NoProgressError` once ``max_idle`` samples in a row gave no optimizer step."""
        c = self.counters
        idle = c["seen"] - self.seen_at_step
        if idle < self.max_idle:
            return
        skipped, failed = self._by("skipped_"), self._by("failed_")
        hint = (f"no caption has a word of the {len(tags or [])}-word tag vocabulary (RUN/tags.txt); check tags.file "
                "or set masking.no_tag=random_word" if skipped.get("no_tag") else "check the data")
        raise NoProgressError(
            f"no optimizer step in the last {idle} samples (limit train.max_idle_samples={self.max_idle}); "
            f"of {c['seen']} samples read so far {c['skipped']} were skipped {skipped or ''} and {c['failed']} "
            f"failed to load {failed or ''}: {hint}")
