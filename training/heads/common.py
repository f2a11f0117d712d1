"""Pieces shared by the fusion heads."""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["PosEmbed2D", "VisualTokens"]


class PosEmbed2D(nn.Module):
    """Learned 2-D position embedding: row embedding + column embedding, up to ``max_grid`` × ``max_grid``."""

    def __init__(self, width: int, max_grid: int = 32) -> None:
        super().__init__()
        self.max_grid = max_grid
        self.row = nn.Parameter(torch.randn(max_grid, width) * 0.02)
        self.col = nn.Parameter(torch.randn(max_grid, width) * 0.02)

    def forward(self, h: int, w: int) -> torch.Tensor:
        if h > self.max_grid or w > self.max_grid:
            raise ValueError(f"visual grid {h}x{w} exceeds model.tfm.max_grid={self.max_grid}; raise it")
        return (self.row[:h, None, :] + self.col[None, :w, :]).reshape(h * w, -1)


class VisualTokens(nn.Module):
    """Feature map (B, C, h, w) → visual tokens (B, h*w, width): linear projection, LayerNorm, 2-D positions."""

    def __init__(self, in_dim: int, width: int, max_grid: int = 32) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, width)
        self.norm = nn.LayerNorm(width)
        self.pos = PosEmbed2D(width, max_grid)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        B, C, h, w = fmap.shape
        v = fmap.flatten(2).transpose(1, 2)
        return self.norm(self.proj(v)) + self.pos(h, w).to(v.dtype)
