"""ICMLM att-fc: the masked token's state attends (multi-head) over the visual positions; an MLP fuses the
attended vector with the text state; the result (LayerNorm) goes to the MLM head. The frozen text state is
LayerNorm-ed first so that its scale matches the visual tokens'."""
from __future__ import annotations

import torch
import torch.nn as nn

from .attention import attend, group_queries
from .common import VisualTokens

__all__ = ["AttFCHead"]


class AttFCHead(nn.Module):
    def __init__(self, vis_dim: int, width: int, heads: int = 4, hidden: int = 1024, dropout: float = 0.1,
                 max_grid: int = 32) -> None:
        super().__init__()
        self.visual = VisualTokens(vis_dim, width, max_grid)
        self.text_norm = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(2 * width, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, width))
        self.norm = nn.LayerNorm(width)
        # model.fusion_impl: fast = queries grouped per image, key/value projections folded where cheaper
        # (training/heads/attention.py); False = the reference (one key/value projection per masked token)
        self.fast = True

    def forward(self, fmap: torch.Tensor, text: torch.Tensor, attention_mask: torch.Tensor,
                rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``rows, cols`` index the masked tokens in ``text`` (B, L, width). Returns fused states (M, width)
        and head-averaged attention over the h*w visual positions (M, h*w)."""
        v = self.visual(fmap)                       # (B, hw, width)
        q = self.text_norm(text[rows, cols].to(v.dtype))  # (M, width)
        if self.fast:
            grouped, slot = group_queries(rows, q, v.shape[0])
            att, w = attend(self.attn, grouped, v)
            att, w = att[rows, slot], w[rows, slot]
        else:
            kv = v[rows]                            # (M, hw, width)
            att, w = self.attn(q[:, None], kv, kv, need_weights=True, average_attn_weights=True)
            att, w = att[:, 0], w[:, 0]
        fused = self.norm(self.mlp(torch.cat([q, att], dim=-1)))
        return fused, w
