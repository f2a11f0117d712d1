"""Optimizer (AdamW, no decay on biases/norms/embeddings) and the warmup + cosine schedule."""
from __future__ import annotations

import dataclasses
import math

import torch

from .choices import OPTIM_IMPLS
from .config_sections import OptimSection

__all__ = ["build_optimizer", "build_scheduler", "lr_factor", "optimizer_kwargs", "OPTIM_IMPLS"]



def build_optimizer(model: torch.nn.Module, o: OptimSection) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters: no weight decay on biases, norms and position/type embeddings; the
    learning rate of each part (``backbone``, ``fusion``, ``mlm_head``, ``tp``) is ``optim.lr`` times its
    ``optim.lr_mult`` entry (the schedule scales every group alike)."""
    mult = dataclasses.asdict(o.lr_mult)
    groups: dict[tuple[str, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = name.split(".", 1)[0]
        decays = not (p.ndim <= 1 or "pos." in name or "type_emb" in name)
        groups.setdefault((part if part in mult else "backbone", decays), []).append(p)
    params = [p for ps in groups.values() for p in ps]
    kw = optimizer_kwargs(o.impl, params)
    return torch.optim.AdamW([{"params": ps, "lr": o.lr * mult[part], "weight_decay": o.weight_decay if d else 0.0}
                              for (part, d), ps in groups.items()], lr=o.lr, betas=tuple(o.betas), **kw)


def optimizer_kwargs(impl: str, params: list[torch.Tensor]) -> dict[str, bool]:
    """Keyword arguments of ``torch.optim.AdamW`` for ``optim.impl``. ``auto``: fused when every parameter is
    a floating tensor on a device the fused kernel supports (CUDA, CPU in torch >= 2.4), else foreach."""
    if impl not in OPTIM_IMPLS:
        raise ValueError(f"optim.impl={impl!r}; choose one of {list(OPTIM_IMPLS)}")
    if impl == "loop":
        return {"foreach": False}
    if impl == "foreach":
        return {"foreach": True}
    if impl == "fused":
        return {"fused": True}
    devices = {p.device.type for p in params}
    ok = bool(params) and devices <= {"cuda", "cpu"} and all(p.is_floating_point() for p in params)
    if ok and "cpu" in devices:
        ok = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 4)
    return {"fused": True} if ok else {"foreach": True}


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup for ``warmup`` steps, then cosine from 1 to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def build_scheduler(opt: torch.optim.Optimizer, total: int, o: OptimSection) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up then cosine (:func:`lr_factor`) over ``total`` optimizer steps."""
    warmup = min(o.warmup_steps, max(0, total - 1))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warmup, o.min_lr_ratio))
