"""Optimizer (AdamW, no decay on biases/norms/embeddings) and the warmup + cosine schedule."""
from __future__ import annotations

import math

import torch

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]


def build_optimizer(model: torch.nn.Module, o: dict) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or "pos." in name or "type_emb" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": o["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    from .speed import optimizer_kwargs
    kw = optimizer_kwargs(o.get("impl", "auto"), decay + no_decay)
    return torch.optim.AdamW(groups, lr=o["lr"], betas=tuple(o["betas"]), **kw)


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup for ``warmup`` steps, then cosine from 1 to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def build_scheduler(opt: torch.optim.Optimizer, total: int, o: dict) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = min(o["warmup_steps"], max(0, total - 1))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warmup, o["min_lr_ratio"]))
