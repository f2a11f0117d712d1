"""Pointing game on held-out scenes: does the attention peak for a masked object word fall inside its box?

For each scene, the first object whose shape word occurs exactly once in the caption has that word replaced by
``[MASK]``; the model's attention map for the mask (``h x w`` over the image) is reduced to its arg-max cell, and
the cell centre (in image pixels) is a hit when it lies inside the object's box (optionally grown by
``tolerance`` pixels). ``chance`` is the hit rate of a uniformly random cell. Also reported: how often the
top-1 predicted word is the masked shape word. Runs without an MLM head (TP-only) return no attention and
are reported as missing (NaN) for both.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from icmlm_zoo.training.inference import LoadedRun, load_run, predict_masked
from icmlm_zoo.transforms import eval_transform

from .scene_probes import held_out_scenes

__all__ = ["mask_object_word", "peak_point", "inside_box", "chance_hit_rate", "peak_in_box", "pointing_game",
           "run_predictor", "run_pointing_game"]

Predict = Callable[[list, list[str]], list[dict[str, Any]]]


def mask_object_word(caption: str, objects: Sequence[dict]) -> tuple[str, dict] | None:
    """``(masked caption, object)`` for the first object whose shape word is unambiguous, else ``None``."""
    for obj in objects:
        pattern = re.compile(rf"\b{re.escape(obj['shape'])}\b")
        if len(pattern.findall(caption)) == 1:
            return pattern.sub("[MASK]", caption, count=1), obj
    return None


def peak_point(attention, image_size: tuple[int, int]) -> tuple[float, float]:
    """Centre ``(x, y)`` in pixels of the arg-max cell of an ``h x w`` map (array or tensor, any dtype or
    device) over an image of ``(W, H)``."""
    if hasattr(attention, "detach"):
        attention = attention.detach().float().cpu()
    att = np.asarray(attention, dtype=np.float64)
    h, w = att.shape
    r, c = np.unravel_index(int(att.argmax()), att.shape)
    W, H = image_size
    return (c + 0.5) * W / w, (r + 0.5) * H / h


def inside_box(x: float, y: float, box: Sequence[float], tol: float = 0.0) -> bool:
    """Whether pixel ``(x, y)`` lies inside ``box`` ``(x0, y0, x1, y1)`` grown by ``tol`` pixels."""
    x0, y0, x1, y1 = box
    return x0 - tol <= x < x1 + tol and y0 - tol <= y < y1 + tol


def chance_hit_rate(shape: tuple[int, int], image_size: tuple[int, int], box: Sequence[float], tol: float) -> float:
    """Fraction of cells of an ``h x w`` grid whose centre lies inside the (grown) box."""
    h, w = shape
    W, H = image_size
    hits = sum(inside_box((c + 0.5) * W / w, (r + 0.5) * H / h, box, tol) for r in range(h) for c in range(w))
    return hits / (h * w)


def peak_in_box(attention, image_size: tuple[int, int], box: Sequence[float]) -> tuple[bool, float]:
    """(whether the attention's arg-max cell centre lies inside ``box``, the chance of a uniformly random cell)."""
    x, y = peak_point(attention, image_size)
    return inside_box(x, y, box), chance_hit_rate(tuple(attention.shape), image_size, box, 0.0)


def pointing_game(predict: Predict, scenes, *, batch_size: int = 16, tolerance: float = 0.0) -> dict[str, Any]:
    """Run the game over ``scenes`` (``SyntheticScenes``-like) with ``predict(images, captions)``, which returns
    ``[{"masks": [{"topk_tokens", "topk_probs", "attention"}]}]`` per image
    (``icmlm_zoo.training.inference.predict_masked``)."""
    items = []
    for i in range(len(scenes)):
        s = scenes.scene(i)
        masked = mask_object_word(s["caption"], s["objects"])
        if masked is not None:
            items.append((s["image"], masked[0], masked[1]))
    hits, chance, top1, n, no_att = 0, 0.0, 0, 0, 0
    for start in tqdm(range(0, len(items), batch_size), desc="pointing game", leave=False):
        batch = items[start:start + batch_size]
        outs = predict([b[0] for b in batch], [b[1] for b in batch])
        for (image, _cap, obj), out in zip(batch, outs):
            if not out.get("masks"):
                continue
            m = out["masks"][0]
            n += 1
            att = m.get("attention")
            if att is None:  # a TP-only run: its "tokens" are image tags, not masked-word predictions
                no_att += 1
                continue
            top1 += int(str(m["topk_tokens"][0]).strip().lower() == obj["shape"])
            x, y = peak_point(att, image.size)
            hits += int(inside_box(x, y, obj["box"], tolerance))
            chance += chance_hit_rate(att.shape, image.size, obj["box"], tolerance)
    scored = n - no_att
    return {"pointing_acc": hits / scored if scored else float("nan"),
            "pointing_chance": chance / scored if scored else float("nan"),
            "masked_shape_top1": top1 / scored if scored else float("nan"),
            "n_scenes": len(scenes), "n_masked": n, "n_without_attention": no_att, "tolerance": tolerance}


def run_predictor(run: LoadedRun, topk: int = 5) -> Predict:
    """``predict(pil_images, captions)`` for a loaded training run: each whole image resized to the run's square
    input (no crop, so the attention grid covers it) and normalised as the run was (its preprocessing record)."""
    tf = eval_transform(run.data_config, full_view=True)
    return lambda images, captions: predict_masked(run, torch.stack([tf(im) for im in images]), list(captions),
                                                   topk=topk)


def run_pointing_game(run_dir: str, *, num_scenes: int = 200, image_size: int | None = None, seed: int = 0,
                      checkpoint: str = "last", tolerance: float = 0.0, batch_size: int = 16) -> dict[str, Any]:
    """The pointing game for an ``icmlm-train`` run folder on held-out scenes (test seed of
    :func:`~icmlm_zoo.analysis.scene_probes.held_out_scenes`); scenes at the run's input size by default."""
    run = load_run(run_dir, checkpoint=checkpoint)
    size = image_size or int(run.config.data.image_size)
    _, test = held_out_scenes(1, num_scenes, size, seed)
    result = pointing_game(run_predictor(run), test, batch_size=batch_size, tolerance=tolerance)
    return {**result, "image_size": size, "step": getattr(run, "step", None)}
