"""Does a run's masked-word head read the image? Grounding probes on held-out scenes, each with its control.

Three measures, every one next to the same measure with the images shuffled across the batch (each caption is
paired with another scene's image: what the text alone gives) and next to its blind chance:

* **visual words**: in each held-out caption one attribute word (colour, shape or size) of one object is
  masked, every occurrence of it; top-1 over the whole vocabulary must be that word. Blind chance is the
  average of 1/|class| (``blind_chance`` of the scene generator: 1/6, 1/4, 1/2).
* **binding**: in scenes with 2-3 objects of distinct colours, *every* colour word is masked; each mask must get
  the colour of the object its phrase names ("the [MASK] circle on the left and the [MASK] square ..."). A
  model that only knows which colours are present (a bag of colours) gets about 1/(number of objects); blind
  chance is 1/6.
  Where each binding mask's attention peaks, and whether its answer follows the object there, is reported too
  (:func:`binding_attention`): it tells binding through attention from a bag of colours read anywhere.
* **pointing**: for the visual-word masks whose word names exactly one object, the arg-max cell of the mask's
  attention must fall inside that object's box; chance is the share of cells inside it.

Scenes, objects and masked words are a pure function of the seed, so every run is scored on the same items.
"""
from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np

from icmlm_zoo.evaluation.reporting import markdown_table
from icmlm_zoo.training.data.synthetic import blind_chance
from icmlm_zoo.training.inference import load_run

from .pointing_game import inside_box, peak_in_box, peak_point, run_predictor
from .scene_probes import held_out_scenes

__all__ = ["ATTRIBUTES", "visual_word_items", "binding_items", "binding_attention", "grounding_scores", "run_grounding",
           "markdown"]

ATTRIBUTES = ("color", "shape", "size")
Predict = Callable[[list, list[str]], list[dict[str, Any]]]


def _mask_all(caption: str, word: str) -> str:
    return re.sub(rf"\b{re.escape(word)}\b", "[MASK]", caption)


def visual_word_items(scenes, seed: int = 0) -> list[dict[str, Any]]:
    """One item per scene: an object's colour, shape or size word (one its caption names) masked at every
    occurrence; its first mask is scored. Items carry the scene's ``objects``."""
    items = []
    for i in range(len(scenes)):
        s = scenes.scene(i)
        rng = np.random.default_rng([seed, i, 31])
        obj = s["objects"][int(rng.integers(len(s["objects"])))]
        said = [c for c in ATTRIBUTES if re.search(rf"\b{obj[c]}\b", s["caption"])]  # captions may omit size
        cls = said[int(rng.integers(len(said)))]
        word = obj[cls]
        owners = [o for o in s["objects"] if o[cls] == word]
        masked = _mask_all(s["caption"], word)
        items.append({"scene": i, "image": s["image"], "caption": masked, "cls": cls,
                      "targets": [word] * masked.count("[MASK]"), "box": obj["box"] if len(owners) == 1 else None,
                      "n_objects": len(s["objects"]), "objects": s["objects"]})
    return items


def binding_items(scenes) -> list[dict[str, Any]]:
    """Scenes with 2-3 objects of distinct colours, every colour word masked; targets in caption order. Items
    carry the scene's ``objects``."""
    items = []
    for i in range(len(scenes)):
        s = scenes.scene(i)
        colors = [o["color"] for o in s["objects"]]
        if len(colors) < 2 or len(set(colors)) != len(colors):
            continue
        found = sorted((m.start(), m.group(0)) for c in colors for m in re.finditer(rf"\b{c}\b", s["caption"]))
        if len(found) != len(colors):
            continue
        cap = s["caption"]
        for c in colors:
            cap = _mask_all(cap, c)
        items.append({"scene": i, "image": s["image"], "caption": cap, "targets": [w for _, w in found],
                      "n_objects": len(colors), "boxes": {o["color"]: o["box"] for o in s["objects"]},
                      "objects": s["objects"]})
    return items


def binding_attention(items: list[dict[str, Any]], outs: list[dict[str, Any]]) -> dict[str, float]:
    """Where the binding masks look, and whether the answer follows: the share of masks whose attention peak
    falls inside the object its phrase names (``binding_peak_on_named``), top-1 when it does
    (``binding_top1_peak_on_named``) and when it falls on another object (``binding_top1_peak_on_other``), and
    how often a mask looking at another object answers with *that* object's colour (``binding_follows_peak``).
    A head that binds through its attention has high values for all but the third."""
    named, other, follows = [], [], []
    for it, out in zip(items, outs):
        for m, target in zip(out.get("masks") or [], it["targets"]):
            if m.get("attention") is None:
                continue
            x, y = peak_point(m["attention"], it["image"].size)
            hit = str(m["topk_tokens"][0]).strip().lower() == target
            under = [c for c, box in it["boxes"].items() if inside_box(x, y, box)]
            if target in under:
                named.append(hit)
            elif under:
                other.append(hit)
                follows.append(str(m["topk_tokens"][0]).strip().lower() in under)
    n = len(named) + len(other)
    mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
    return {"binding_peak_on_named": len(named) / n if n else float("nan"),
            "binding_top1_peak_on_named": mean(named), "binding_top1_peak_on_other": mean(other),
            "binding_follows_peak": mean(follows)}


def _predict_all(predict: Predict, items: list[dict], batch_size: int, shuffled: bool) -> list[dict]:
    """Predictions per item; ``shuffled`` pairs each caption with the next item's image (a derangement)."""
    outs = []
    images = [it["image"] for it in items]
    if shuffled and len(images) > 1:
        images = images[1:] + images[:1]
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        outs += predict(images[start:start + len(chunk)], [it["caption"] for it in chunk])
    return outs


def _hits(items: list[dict], outs: list[dict]) -> list[list[bool]]:
    res = []
    for it, out in zip(items, outs):
        masks = out.get("masks") or []
        if len(masks) != len(it["targets"]):
            raise ValueError(f"caption {it['caption']!r}: {len(masks)} masks predicted, {len(it['targets'])} expected")
        res.append([str(m["topk_tokens"][0]).strip().lower() == t for m, t in zip(masks, it["targets"])])
    return res


def grounding_scores(predict: Predict, scenes, *, seed: int = 0, batch_size: int = 32) -> dict[str, float]:
    """Visual-word top-1 (overall, per class, in multi-object scenes), binding top-1 and the pointing game,
    each with the images shuffled, and the chance levels (see the module docstring). ``predict(images,
    captions)`` returns ``icmlm_zoo.training.inference.predict_masked``-style outputs."""
    vis = visual_word_items(scenes, seed)
    bind = binding_items(scenes)
    res: dict[str, float] = {"visual_chance": float(np.mean([blind_chance(it["cls"]) for it in vis]))}
    for shuffled in (False, True):
        sfx = "_shuffled" if shuffled else ""
        outs = _predict_all(predict, vis, batch_size, shuffled)
        hits = [h[0] for h in _hits(vis, outs)]  # the first occurrence of the masked word
        res[f"visual_top1{sfx}"] = float(np.mean(hits))
        for cls in ATTRIBUTES:
            sel = [h for h, it in zip(hits, vis) if it["cls"] == cls]
            res[f"{cls}_top1{sfx}"] = float(np.mean(sel)) if sel else float("nan")
        multi = [h for h, it in zip(hits, vis) if it["n_objects"] > 1]
        res[f"visual_top1_multi{sfx}"] = float(np.mean(multi)) if multi else float("nan")
        pts = [(peak_in_box(o["masks"][0]["attention"], it["image"].size, it["box"]))
               for it, o in zip(vis, outs) if it["box"] is not None and o["masks"][0].get("attention") is not None]
        res[f"pointing{sfx}"] = float(np.mean([p[0] for p in pts])) if pts else float("nan")
        if not shuffled:
            res["pointing_chance"] = float(np.mean([p[1] for p in pts])) if pts else float("nan")
        if bind:
            bind_outs = _predict_all(predict, bind, batch_size, shuffled)
            res[f"binding_top1{sfx}"] = float(np.mean([h for row in _hits(bind, bind_outs) for h in row]))
            if not shuffled:
                res.update(binding_attention(bind, bind_outs))
    res["image_use_gap"] = res["visual_top1"] - res["visual_top1_shuffled"]
    if bind:
        res["binding_chance"] = blind_chance("color")
        res["binding_bag_of_colors"] = float(np.mean([1.0 / it["n_objects"] for it in bind for _ in it["targets"]]))
    res.update(n_visual=len(vis), n_binding=sum(len(it["targets"]) for it in bind))
    return res


def run_grounding(run_dir: str, *, num_scenes: int = 400, seed: int = 0, checkpoint: str = "last",
                  batch_size: int = 32, device: str = "cpu") -> dict[str, Any]:
    """:func:`grounding_scores` of an ``icmlm-train`` run folder on held-out scenes at the run's input size."""
    run = load_run(run_dir, checkpoint=checkpoint, device=device)
    if run.model.fusion_kind is None:
        return {"step": run.step, "note": "no masked-word head (TP only)"}
    _, test = held_out_scenes(1, num_scenes, int(run.config.data.image_size), seed)
    return {"step": run.step, **grounding_scores(run_predictor(run), test, seed=seed, batch_size=batch_size)}


def markdown(result: dict[str, Any]) -> str:
    """The grounding scores of one run as a table: each measure with the images, shuffled, and chance."""
    if "visual_top1" not in result:
        return f"# Grounding — `{result.get('run', '')}`\n\n{result.get('note', 'no scores')}\n"
    pct = lambda k: f"{100 * result[k]:.1f}" if isinstance(result.get(k), float) else "–"  # noqa: E731
    rows = [("visual-word top-1", "visual_top1", "visual_top1_shuffled", "visual_chance"),
            ("… colour words", "color_top1", "color_top1_shuffled", None),
            ("… shape words", "shape_top1", "shape_top1_shuffled", None),
            ("… size words", "size_top1", "size_top1_shuffled", None),
            ("… in 2-3 object scenes", "visual_top1_multi", "visual_top1_multi_shuffled", None),
            ("binding (every colour masked)", "binding_top1", "binding_top1_shuffled", "binding_chance"),
            ("pointing", "pointing", "pointing_shuffled", "pointing_chance")]
    lines = [f"# Grounding — `{result.get('run', '')}` (step {result.get('step')})", "",
             *markdown_table(("measure (%)", "real images", "shuffled images", "chance"),
                             [(name, pct(a), pct(b), pct(c) if c else "–") for name, a, b, c in rows], "lrrr")]
    lines += ["", f"Image-use gap (visual-word top-1, real − shuffled): {100 * result['image_use_gap']:+.1f} points. "
              f"A bag of colours scores about {pct('binding_bag_of_colors')} on binding."]
    if "binding_peak_on_named" in result:
        lines += ["", "Binding masks look at the object their phrase names "
                  f"{pct('binding_peak_on_named')} % of the time (top-1 {pct('binding_top1_peak_on_named')} % then, "
                  f"{pct('binding_top1_peak_on_other')} % when they "
                  f"look at another object, and then they name that object's colour {pct('binding_follows_peak')} % "
                  "of the time). A head that binds through its attention would be right when it looks at the named "
                  "object and would name the colour it looks at otherwise."]
    return "\n".join(lines) + "\n"
