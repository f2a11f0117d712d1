"""Classification transfer: the colour of a named shape, fine-tuned with the backbone unfrozen and frozen.

The task is the binding probe of the fidelity experiment as a fine-tuning task: in scenes of 2-3 objects, for
each shape that occurs once, which of the 6 colours does it wear? One linear head per shape on the pooled
feature map; cross-entropy where a shape has an answer; accuracy averaged over shapes (as the frozen probe).
``fine-tuned``: trunk and heads trained together; ``frozen``: the same heads on the frozen trunk's features,
same data and steps. A bag of tags (which colours, which shapes) does not answer it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from icmlm_zoo.training.data.synthetic import COLORS, SHAPES

__all__ = ["ClassificationRecipe", "binding_targets", "fine_tune_classification"]


@dataclass(frozen=True)
class ClassificationRecipe:
    """Steps, batch and learning rates of the classification fine-tune."""

    iters: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4


def binding_targets(scenes: Sequence[dict[str, Any]]) -> np.ndarray:
    """(N, 4 shapes) colour index of each shape that occurs once in a scene of 2-3 objects, else -1."""

    colours = list(COLORS)
    y = np.full((len(scenes), len(SHAPES)), -1, dtype=np.int64)
    for i, s in enumerate(scenes):
        objs = s["objects"]
        if len(objs) < 2:
            continue
        for k, shape in enumerate(SHAPES):
            owners = [o for o in objs if o["shape"] == shape]
            if len(owners) == 1:
                y[i, k] = colours.index(owners[0]["color"])
    return y


class _Heads(nn.Module):
    def __init__(self, trunk: nn.Module, dim: int, shapes: int, colours: int) -> None:
        super().__init__()
        self.trunk, self.fc, self.shapes, self.colours = trunk, nn.Linear(dim, shapes * colours), shapes, colours

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.trunk(x)).view(-1, self.shapes, self.colours)


def _images(scenes, mean, std) -> torch.Tensor:
    x = torch.stack([torch.from_numpy(np.asarray(s["image"].convert("RGB"), dtype=np.float32) / 255.0)
                     for s in scenes]).permute(0, 3, 1, 2)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    accs = [float((logits[:, k].argmax(1)[y[:, k] >= 0] == y[:, k][y[:, k] >= 0]).float().mean())
            for k in range(y.shape[1]) if (y[:, k] >= 0).any()]
    return float(np.mean(accs))


def _train(model: nn.Module, params, x: torch.Tensor, y: torch.Tensor, recipe: ClassificationRecipe,
           seed: int, train_trunk: bool) -> None:
    keep = (y >= 0).any(1)
    x, y = x[keep], y[keep]
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, recipe.iters)
    gen = torch.Generator().manual_seed(seed)
    model.train(train_trunk)
    for _ in range(recipe.iters):
        idx = torch.randint(0, len(x), (min(recipe.batch_size, len(x)),), generator=gen)
        logits, t = model(x[idx]), y[idx]
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), t.flatten(), ignore_index=-1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


class _Frozen(nn.Module):
    """Heads on precomputed features (the frozen trunk)."""

    def __init__(self, fc: nn.Linear, shapes: int, colours: int) -> None:
        super().__init__()
        self.fc, self.shapes, self.colours = fc, shapes, colours

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f).view(-1, self.shapes, self.colours)


@torch.no_grad()
def _features(trunk: nn.Module, x: torch.Tensor, batch: int = 128) -> torch.Tensor:
    trunk.eval()
    return torch.cat([trunk(x[i:i + batch]) for i in range(0, len(x), batch)])


def fine_tune_classification(trunk: nn.Module, mean, std, *, train: Sequence[dict], tests: dict[str, list],
                             recipe: ClassificationRecipe, seed: int) -> dict[str, dict[str, float]]:
    """``{"fine-tuned": {"acc", "acc_shifted"}, "frozen": {...}}`` on the binding task (module doc)."""

    ytr = torch.from_numpy(binding_targets(train))
    xtr = _images(train, mean, std)
    xte = {name: (_images(s, mean, std), torch.from_numpy(binding_targets(s))) for name, s in tests.items()}
    out: dict[str, dict[str, float]] = {}
    torch.manual_seed(seed)
    frozen_trunk = copy.deepcopy(trunk)
    head = _Frozen(nn.Linear(trunk.num_features, len(SHAPES) * len(COLORS)), len(SHAPES), len(COLORS))
    ftr = _features(frozen_trunk, xtr)
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-6  # standardised features, as the frozen probes of the fidelity table
    _train(head, head.parameters(), (ftr - mu) / sd, ytr, recipe, seed, train_trunk=False)
    with torch.no_grad():
        out["frozen"] = {_key(n): _accuracy(head((_features(frozen_trunk, x) - mu) / sd), y)
                         for n, (x, y) in xte.items()}
    torch.manual_seed(seed)
    model = _Heads(copy.deepcopy(trunk), trunk.num_features, len(SHAPES), len(COLORS))
    for p in model.parameters():
        p.requires_grad_(True)
    _train(model, model.parameters(), xtr, ytr, recipe, seed, train_trunk=True)
    model.eval()
    with torch.no_grad():
        out["fine-tuned"] = {_key(n): _accuracy(torch.cat([model(x[i:i + 128]) for i in range(0, len(x), 128)]), y)
                             for n, (x, y) in xte.items()}
    return out


def _key(name: str) -> str:
    return "acc" if name == "test" else f"acc_{name}"
