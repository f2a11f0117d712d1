"""Per-part learning rates: every trainable parameter in exactly one group, at lr x its part's multiplier."""
from __future__ import annotations

import torch.nn as nn

from icmlm_zoo.training.config_sections import LrMult, OptimSection
from icmlm_zoo.training.optim import build_optimizer, build_scheduler


class _Parts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.fusion = nn.Linear(4, 4)
        self.mlm_head = nn.Linear(4, 4)
        self.tp = nn.Linear(4, 2)
        self.frozen = nn.Linear(4, 4).requires_grad_(False)


def test_lr_mult_scales_each_part_and_decay_rules_hold():
    model = _Parts()
    o = OptimSection(lr=1e-3, weight_decay=0.05, impl="loop", warmup_steps=10, min_lr_ratio=0.01,
                     lr_mult=LrMult(backbone=1.0, fusion=0.25, mlm_head=2.0, tp=1.0))
    opt = build_optimizer(model, o)
    where = {id(p): g for g in opt.param_groups for p in g["params"]}
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert len(where) == len(trainable) == sum(len(g["params"]) for g in opt.param_groups)
    for name, p in trainable:
        g = where[id(p)]
        part = name.split(".")[0]
        assert g["lr"] == 1e-3 * getattr(o.lr_mult, part), name
        assert g["weight_decay"] == (0.0 if p.ndim <= 1 else 0.05), name
    sched = build_scheduler(opt, 100, o)
    for _ in range(10):
        opt.step()
        sched.step()
    lrs = {g["lr"] / g["initial_lr"] for g in opt.param_groups}
    assert len({round(x, 12) for x in lrs}) == 1  # the schedule scales every part alike
