"""TP: multi-label tag prediction from globally average-pooled visual features."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["TPHead"]


class TPHead(nn.Module):
    """avg-pool → [Linear → ReLU → Dropout] (``hidden`` > 0) → Linear(num_tags); loss: BCE with logits."""

    def __init__(self, in_dim: int, num_tags: int, hidden: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        if hidden:
            layers += [nn.Linear(d, hidden), nn.ReLU(inplace=True)]
            d = hidden
        layers += [nn.Dropout(dropout), nn.Linear(d, num_tags)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.mlp(fmap.float().mean(dim=(2, 3)))

    @staticmethod
    def loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        """Binary cross-entropy with logits. ``sum``: summed over the K tags, averaged over images (the
        multi-label convention: each image's gradient does not shrink as the vocabulary grows); ``mean``:
        averaged over images and tags (1/K of ``sum``: with K≈1000 tags, TP all but vanishes next to the MLM
        loss)."""
        bce = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
        return bce.mean() if reduction == "mean" else bce.sum(-1).mean()
