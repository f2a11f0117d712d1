"""Fusion heads trained on frozen, cached features: the fusion-head part of :mod:`.binding_diagnosis`.

Items are :func:`~icmlm_zoo.analysis.binding_diagnosis.encode_items` outputs: a trunk map, the caption's
frozen text states, the scored mask positions and their target ids. A head of the run's kind and config is
trained on them alone (the trunk and the text encoder never change), so what it learns depends only on the
masks it is given and on the features.
"""
from __future__ import annotations

from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F

from icmlm_zoo.training.model import build_model
from icmlm_zoo.training.text import load_text_side

from .pointing_game import peak_in_box

__all__ = ["train_fresh_head", "draw_batch"]

# one pool of items, or two pools and the share of the second in each batch
Pool = Union[list[dict], tuple[list[dict], list[dict], float]]


def _batch(data: list[dict], roll: bool = False):
    """Stack items into the fusion head's inputs: maps, padded text states and mask, masked rows/cols, targets."""
    fmap = torch.stack([d["fmap"] for d in data])
    if roll:  # each caption with the next item's image: what the text alone gives
        fmap = fmap.roll(1, 0)
    L = max(len(d["text"]) for d in data)
    text = torch.zeros(len(data), L, data[0]["text"].shape[-1])
    mask = torch.zeros(len(data), L, dtype=torch.long)
    rows, cols = [], []
    for i, d in enumerate(data):
        text[i, :len(d["text"])] = d["text"].float()
        mask[i, :len(d["text"])] = 1
        rows.append(torch.full_like(d["positions"], i))
        cols.append(d["positions"])
    return fmap, text, mask, torch.cat(rows), torch.cat(cols), torch.cat([d["targets"] for d in data])


def _scores(fusion, mlm, data: list[dict], roll: bool = False, batch_size: int = 128) -> tuple[float, float]:
    """Top-1 over every scored mask, and the pointing game over the items with one named object (``box``):
    the first mask's attention peak inside it."""
    hits, points = [], []
    fusion.eval()
    with torch.no_grad():
        for s in range(0, len(data), batch_size):
            chunk = data[s:s + batch_size]
            fmap, text, mask, rows, cols, targets = _batch(chunk, roll)
            fused, att = fusion(fmap, text, mask, rows, cols)
            hits.append(mlm(fused).argmax(-1) == targets)
            first = torch.cumsum(torch.tensor([0] + [len(d["positions"]) for d in chunk[:-1]]), 0)
            maps = att[first].reshape(len(chunk), *fmap.shape[-2:])
            points += [peak_in_box(m, d["image_size"], d["box"])[0] for m, d in zip(maps, chunk) if d["box"]]
    fusion.train()
    top1 = float(torch.cat(hits).float().mean()) if hits else float("nan")
    return top1, float(np.mean(points)) if points else float("nan")


def draw_batch(train: Pool, batch_size: int, rng) -> list[dict]:
    """A batch from one pool, or from two pools ``(a, b, share_of_b)`` in that proportion on average."""
    if isinstance(train, tuple):
        a, b, share = train
        n_b = int(rng.binomial(batch_size, share))
        return [a[i] for i in rng.choice(len(a), batch_size - n_b)] + [b[i] for i in rng.choice(len(b), n_b)]
    return [train[i] for i in rng.choice(len(train), min(batch_size, len(train)), replace=False)]


def train_fresh_head(run, train: Pool, tests: dict[str, list[dict]], *, steps: int = 2000, batch_size: int = 64,
                     lr: float = 5e-4, seed: int = 0, curve_points: int = 4,
                     from_run_head: bool = False) -> dict[str, Any]:
    """Train a fresh fusion + MLM head of ``run``'s config (``from_run_head``: a copy of the run's trained one)
    on cached ``train`` items (:func:`draw_batch`), frozen features, AdamW at a constant ``lr``. Returns each test
    set's top-1 (``binding`` also with shuffled images) and the pointing game, at the end and along the way
    (step 0 included: the control of every score)."""
    torch.manual_seed(seed)
    fresh = build_model(run.config, load_text_side(run.config.text.model), 0)
    fusion, mlm = fresh.fusion, fresh.mlm_head
    if from_run_head:
        fusion.load_state_dict(run.model.fusion.state_dict())
        mlm.load_state_dict(run.model.mlm_head.state_dict())
    fusion.train()
    params = [p for p in list(fusion.parameters()) + list(mlm.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    curve, every = [], max(1, steps // curve_points)
    for step in range(0, steps + 1):
        if step % every == 0 or step == steps:  # step 0: the untrained head, the control of every score
            point = {"step": step}
            for name, items in tests.items():
                point[name], pointing = _scores(fusion, mlm, items)
                if name == "visual":
                    point["pointing"] = pointing
            curve.append(point)
        if step == steps:
            break
        fmap, text, mask, rows, cols, targets = _batch(draw_batch(train, batch_size, rng))
        fused, _ = fusion(fmap, text, mask, rows, cols)
        loss = F.cross_entropy(mlm(fused).float(), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    final = dict(curve[-1])
    final.pop("step")
    if "binding" in tests:
        final["binding_shuffled"] = _scores(fusion, mlm, tests["binding"], roll=True)[0]
    return {**final, "curve": curve}
