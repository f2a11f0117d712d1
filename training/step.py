"""The training step: what the trainer runs and the benchmarks time, one implementation for both.

A step is one or more micro-batches (``optim.accum_steps``): forward under autocast, the loss divided by the
number of micro-batches (and scaled by the fp16 ``GradScaler``), backward with the DDP gradient all-reduce only on
the last one; then unscale and clip (``optim.grad_clip``) or measure the gradient norm, and either apply
(optimizer, scaler, scheduler; gradients cleared) or discard a step whose loss or gradient is not finite.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch

from .amp import autocast

__all__ = ["TrainStep", "icmlm_forward", "STRAIGHTFORWARD_OVERRIDES"]

#: config overrides that give the straightforward (unoptimised) ICMLM step of benchmark P2: encoder recomputed in
#: fp32 every step, logits at every position, NCHW, the reference fusion implementation (docs/performance.md)
STRAIGHTFORWARD_OVERRIDES = ["text.precision=fp32", "text.cache_size=0", "model.logits=all",
                             "model.channels_last=false", "model.fusion_impl=reference"]


def icmlm_forward(module: torch.nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
    """The ICMLM forward of a collated batch: images, and the caption tensors and TP targets when present."""
    return module(batch["images"], batch.get("input_ids"), batch.get("attention_mask"), batch.get("labels"),
                  batch.get("tp"))


class TrainStep:
    """One optimizer step over ``accum_steps`` micro-batches.

    ``module`` is what runs the forward (the model, or its ``DistributedDataParallel`` wrapper); ``params`` are
    the parameters clipped (default: every trainable parameter of ``module``); ``forward(module, batch)`` returns
    a dict with ``loss`` (default :func:`icmlm_forward`). Use :meth:`__call__` for a whole
    step on one batch, or :meth:`micro_batch` / :meth:`grad_norm` / :meth:`apply` / :meth:`discard` to check
    the loss and gradient in between (the trainer skips non-finite steps).
    """

    def __init__(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, *,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                 scaler: torch.amp.GradScaler | None = None, amp: str = "none", accum_steps: int = 1,
                 grad_clip: float = 0.0, params: list[torch.nn.Parameter] | None = None,
                 forward: Callable[[torch.nn.Module, dict[str, Any]], dict[str, Any]] | None = None) -> None:
        self.module, self.optimizer, self.scheduler = module, optimizer, scheduler
        self.scaler = scaler if scaler is not None else torch.amp.GradScaler("cpu", enabled=False)
        self.amp, self.accum_steps, self.grad_clip = amp, int(accum_steps), float(grad_clip or 0.0)
        self.params = params if params is not None else [p for p in module.parameters() if p.requires_grad]
        self.forward = forward or icmlm_forward
        self._distributed = isinstance(module, torch.nn.parallel.DistributedDataParallel)

    def micro_batch(self, batch: dict[str, Any], *, last: bool = True) -> dict[str, Any]:
        """Forward (under the step's autocast) and backward of one micro-batch, on the batch's device; returns
        the forward's outputs (``loss`` included). Under DDP both run inside ``no_sync`` unless ``last``."""
        sync = contextlib.nullcontext() if (last or not self._distributed) else self.module.no_sync()
        with sync:
            with autocast(self.amp, batch["images"].device):
                out = self.forward(self.module, batch)
            self.scaler.scale(out["loss"] / self.accum_steps).backward()
        return out

    def grad_norm(self) -> torch.Tensor | None:
        """Unscale and clip to ``grad_clip`` (when set), returning the total norm before clipping; without
        clipping the norm is measured only when no ``GradScaler`` is on (fp16 skips bad steps itself: None)."""
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            return torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        if not self.scaler.is_enabled():
            return torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        return None

    def apply(self) -> None:
        """Optimizer step, scaler update, gradients cleared, scheduler step."""
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()

    def discard(self) -> None:
        """Drop the accumulated gradients, weights unchanged (a non-finite step); the scheduler does not move."""
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)  # skipped by the scaler (non-finite gradients); resets its state
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A whole step on one batch (``accum_steps`` must be 1): forward, backward, clip, apply."""
        if self.accum_steps != 1:
            raise ValueError(f"TrainStep(batch) runs one micro-batch per step; accum_steps={self.accum_steps}: "
                             "call micro_batch() for each, then grad_norm() and apply()")
        out = self.micro_batch(batch)
        out["grad_norm"] = self.grad_norm()
        self.apply()
        return out
