"""ICMLM tfm: visual tokens (projected, 2-D positions) concatenated with the caption's token states, a small
transformer encoder (post-LN, like BERT), outputs at the masked positions go to the MLM head."""
from __future__ import annotations

import torch
import torch.nn as nn

from .common import VisualTokens

__all__ = ["TfmHead", "EncoderLayer"]


class EncoderLayer(nn.Module):
    """Post-LN transformer layer that can return its head-averaged attention weights."""

    def __init__(self, width: int, heads: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(width, ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff, width))
        self.n1, self.n2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor, need_weights: bool = False):
        a, w = self.attn(x, x, x, key_padding_mask=pad, need_weights=need_weights, average_attn_weights=True)
        x = self.n1(x + self.drop(a))
        x = self.n2(x + self.drop(self.ff(x)))
        return x, w

    def forward_at(self, x: torch.Tensor, pad: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor):
        """The same layer computed only for the queries at ``(rows, pos)`` (keys/values: every position of the
        row). Returns their outputs (M, width) and head-averaged attention weights (M, S). Speed lever: the
        last layer's outputs are only needed at the masked tokens."""
        B, S, E = x.shape
        counts = torch.bincount(rows, minlength=B)
        slot = torch.arange(len(rows), device=x.device) - (torch.cumsum(counts, 0) - counts)[rows]  # rows sorted
        idx = torch.zeros(B, max(1, int(counts.max())) if len(rows) else 1, dtype=torch.long, device=x.device)
        idx[rows, slot] = pos
        q = x.gather(1, idx[..., None].expand(-1, -1, E))
        a, w = self.attn(q, x, x, key_padding_mask=pad, need_weights=True, average_attn_weights=True)
        y = self.n1(q + self.drop(a))
        y = self.n2(y + self.drop(self.ff(y)))
        return y[rows, slot], w[rows, slot]


class TfmHead(nn.Module):
    def __init__(self, vis_dim: int, width: int, layers: int = 2, heads: int = 4, ff: int = 1024,
                 dropout: float = 0.1, max_grid: int = 32) -> None:
        super().__init__()
        self.visual = VisualTokens(vis_dim, width, max_grid)
        self.text_norm = nn.LayerNorm(width)  # frozen text states rescaled to the visual tokens' scale
        self.type_emb = nn.Parameter(torch.zeros(2, width))
        self.layers = nn.ModuleList(EncoderLayer(width, heads, ff, dropout) for _ in range(layers))
        # speed lever: the last layer only at the requested (masked) positions; the model turns it off for
        # model.logits=all (the straightforward baseline computes every position)
        self.last_layer_at_masked = True

    def forward(self, fmap: torch.Tensor, text: torch.Tensor, attention_mask: torch.Tensor,
                rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns fused states at the masked tokens (M, width) and, from the last layer, each masked token's
        head-averaged attention over the visual positions, renormalised to sum to 1 (M, h*w)."""
        v = self.visual(fmap)
        hw = v.shape[1]
        t = self.text_norm(text.to(v.dtype))
        x = torch.cat([v + self.type_emb[0], t + self.type_emb[1]], dim=1)
        pad = torch.cat([torch.zeros(v.shape[:2], dtype=torch.bool, device=v.device), attention_mask == 0], dim=1)
        w = None
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers[:last] if self.last_layer_at_masked else self.layers):
            x, w = layer(x, pad, need_weights=i == last)
        if self.last_layer_at_masked:
            fused, w = self.layers[last].forward_at(x, pad, rows, hw + cols)
            att = w[:, :hw].float()
        else:
            fused = x[rows, hw + cols]
            att = w[rows, hw + cols, :hw].float()
        att = att / att.sum(-1, keepdim=True).clamp_min(1e-12)
        return fused, att
