"""ICMLM tfm: visual tokens (projected, 2-D positions) concatenated with the caption's token states, a small
transformer encoder (post-LN, like BERT), outputs at the masked positions go to the MLM head."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import attend, group_queries
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

    def _finish(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        x = self.n1(x + self.drop(a))
        return self.n2(x + self.drop(self.ff(x)))

    def forward(self, x: torch.Tensor, pad: torch.Tensor, need_weights: bool = False):
        a, w = self.attn(x, x, x, key_padding_mask=pad, need_weights=need_weights, average_attn_weights=True)
        return self._finish(x, a), w

    def forward_packed(self, h: torch.Tensor, where: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """The layer over the real tokens only: ``h`` (N, width) are the states at the flat positions
        ``where`` of a (B, S) batch whose padding is ``pad``. Projections, feed-forward and norms run on the
        N real tokens; only the attention itself sees the padded (B, S) layout."""
        B, S = pad.shape
        E, H = h.shape[-1], self.attn.num_heads
        qkv = F.linear(h, self.attn.in_proj_weight, self.attn.in_proj_bias)
        full = qkv.new_zeros(B * S, 3 * E).index_copy(0, where, qkv)
        q, k, v = full.view(B, S, 3, H, E // H).permute(2, 0, 3, 1, 4)  # each (B, H, S, d)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=~pad[:, None, None, :],
                                           dropout_p=self.attn.dropout if self.training else 0.0)
        o = o.transpose(1, 2).reshape(B * S, E)[where]
        return self._finish(h, self.attn.out_proj(o))

    def forward_queries(self, q: torch.Tensor, x: torch.Tensor, pad: torch.Tensor):
        """The layer's outputs for the queries ``q`` (B, Q, width) only, keys/values every position of ``x``
        (B, S, width); returns them (B, Q, width) and the head-averaged attention weights (B, Q, S)."""
        a, w = attend(self.attn, q, x, pad)
        return self._finish(q, a), w


class TfmHead(nn.Module):
    def __init__(self, vis_dim: int, width: int, layers: int = 2, heads: int = 4, ff: int = 1024,
                 dropout: float = 0.1, max_grid: int = 32) -> None:
        super().__init__()
        self.visual = VisualTokens(vis_dim, width, max_grid)
        self.text_norm = nn.LayerNorm(width)  # frozen text states rescaled to the visual tokens' scale
        self.type_emb = nn.Parameter(torch.zeros(2, width))
        self.layers = nn.ModuleList(EncoderLayer(width, heads, ff, dropout) for _ in range(layers))
        # model.fusion_impl: fast = the layers over the real tokens only and the last layer only at the asked
        # positions (its keys/values folded where cheaper); False = the reference, every layer everywhere
        self.fast = True

    def forward(self, fmap: torch.Tensor, text: torch.Tensor, attention_mask: torch.Tensor,
                rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns fused states at the tokens ``(rows, cols)`` of ``text`` (M, width) and, from the last layer,
        each one's head-averaged attention over the visual positions, renormalised to sum to 1 (M, h*w)."""
        v = self.visual(fmap)
        hw = v.shape[1]
        t = self.text_norm(text.to(v.dtype))
        x = torch.cat([v + self.type_emb[0], t + self.type_emb[1]], dim=1)
        pad = torch.cat([torch.zeros(v.shape[:2], dtype=torch.bool, device=v.device), attention_mask == 0], dim=1)
        if self.fast:
            fused, w = self._fast(x, pad, rows, hw + cols)
        else:
            for i, layer in enumerate(self.layers):
                x, w = layer(x, pad, need_weights=i == len(self.layers) - 1)
            fused, w = x[rows, hw + cols], w[rows, hw + cols]
        att = w[:, :hw].float()
        return fused, att / att.sum(-1, keepdim=True).clamp_min(1e-12)

    def _fast(self, x: torch.Tensor, pad: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor):
        B, S, E = x.shape
        if len(self.layers) > 1:
            where = (~pad).flatten().nonzero().squeeze(1)
            h = x.reshape(B * S, E)[where]
            for layer in self.layers[:-1]:
                h = layer.forward_packed(h, where, pad)
            x = h.new_zeros(B * S, E).index_copy(0, where, h).view(B, S, E)
        q, slot = group_queries(rows, x[rows, pos], B)
        y, w = self.layers[-1].forward_queries(q, x, pad)
        return y[rows, slot], w[rows, slot]
