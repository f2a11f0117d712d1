"""Attention for the fusion heads' fast path (``model.fusion_impl=fast``).

ICMLM asks few queries of each image: one per masked word, against the 49 visual positions (att-fc) or every
position of the sequence (the tfm's last layer). Two exact rewrites of ``nn.MultiheadAttention`` make that
cheap; both use the module's own parameters, so checkpoints are the same for either implementation:

* :func:`group_queries` lays the queries out per row, so the keys/values of an image are projected once, not
  once per masked word.
* :func:`folded_attention` folds the key projection into the queries and applies the value projection after
  the weighted sum (``q·(W_k x + b_k) = (W_kᵀ q)·x + const`` and ``Σ a (W_v x + b_v) = W_v Σ a x + b_v Σ a``):
  with Q queries over S positions of width E and H heads it costs about ``Q (E + (H-1) S)`` against
  ``S E`` multiply-adds per width unit for projecting the keys and values; :func:`attend` takes the cheaper.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["group_queries", "fold_is_cheaper", "folded_attention", "attend"]


def group_queries(rows: torch.Tensor, values: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lay the queries ``values`` (M, ...) that belong to ``rows`` (M,) of a batch out per row: returns the
    grouped queries (batch, most in a row, ...), zeros where a row has fewer, and each query's slot in its
    row, so that ``grouped[rows, slot]`` are the M queries again."""
    counts = torch.bincount(rows, minlength=batch)
    slot = torch.empty_like(rows)
    if len(rows):
        order = torch.argsort(rows, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        slot[order] = torch.arange(len(rows), device=rows.device) - starts[rows[order]]
    grouped = values.new_zeros(batch, max(1, int(counts.max())), *values.shape[1:])
    grouped[rows, slot] = values
    return grouped, slot


def fold_is_cheaper(queries: int, positions: int, width: int, heads: int) -> bool:
    """Whether folding the key/value projections into ``queries`` per row costs fewer multiply-adds than
    projecting the keys and values of ``positions`` per row."""
    return queries * (width + (heads - 1) * positions) < positions * width


def folded_attention(mha: nn.MultiheadAttention, q: torch.Tensor, kv: torch.Tensor,
                     key_padding_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``mha(q, kv, kv)`` (batch-first, ``q`` (B, Q, E), ``kv`` (B, S, E), ``key_padding_mask`` True = ignore)
    computed with the key/value projections folded into the queries. Returns the output (B, Q, E) and the
    head-averaged attention weights (B, Q, S), after dropout like ``nn.MultiheadAttention``."""
    if not mha._qkv_same_embed_dim or mha.in_proj_bias is None or mha.bias_k is not None or mha.add_zero_attn:
        raise ValueError("folded_attention needs an nn.MultiheadAttention with one packed, biased in-projection")
    B, Q, E = q.shape
    S, H = kv.shape[1], mha.num_heads
    d = E // H
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, _, b_v = mha.in_proj_bias.chunk(3)  # the key bias shifts all scores of a query alike: softmax drops it
    qh = F.linear(q, w_q, b_q).view(B, Q, H, d) * d ** -0.5
    u = torch.einsum("bqhd,hde->bqhe", qh, w_k.view(H, d, E))          # keys folded into the queries
    scores = torch.matmul(u.reshape(B, Q * H, E), kv.transpose(1, 2)).view(B, Q, H, S)
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    a = F.dropout(scores.softmax(-1), mha.dropout, mha.training)
    ctx = torch.matmul(a.reshape(B, Q * H, S), kv).view(B, Q, H, E)  # weighted sum of the states
    o = torch.einsum("bqhe,hde->bqhd", ctx, w_v.view(H, d, E)) + a.sum(-1, keepdim=True) * b_v.view(H, d)
    out = F.linear(o.reshape(B, Q, E), mha.out_proj.weight, mha.out_proj.bias)
    return out, a.mean(2)


def attend(mha: nn.MultiheadAttention, q: torch.Tensor, kv: torch.Tensor,
           key_padding_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``mha(q, kv, kv)`` with head-averaged weights, folded when that is cheaper (:func:`fold_is_cheaper`)."""
    if fold_is_cheaper(q.shape[1], kv.shape[1], q.shape[2], mha.num_heads):
        return folded_attention(mha, q, kv, key_padding_mask)
    return mha(q, kv, kv, key_padding_mask=key_padding_mask, need_weights=True, average_attn_weights=True)
