"""Why a run's masked-word head does or does not bind colours to the objects their phrases name.

``icmlm-eval grounding`` says *whether* a head binds (every colour word of a 2-3 object scene masked, against
a bag of colours). This module says *where* binding is lost, each measure next to its control:

* **text**: a linear probe on the frozen text state at each binding mask ("a [MASK] circle and a [MASK]
  square") predicts the shape of the object its phrase names (control: the majority shape). High = the query
  knows which object to look for.
* **trunk**: a linear probe on the run's feature cell under each object predicts that object's colour and
  shape, in one-object and in 2-3 object scenes. Equal = the map keeps each object's colour in its own cell.
* **fusion**: a fresh fusion head of the run's kind (random init, same config), trained on the run's *frozen*
  trunk and text features with one of three mask sets, then scored on held-out binding masks (controls: a
  bag of colours, the same head with shuffled images), visual words and the pointing game:

  - ``single``: one attribute word of one object masked (what a run trains on; the caption names every other
    colour, so "the colour present that the caption does not name" answers without binding);
  - ``binding``: every colour word of a 2-3 object scene masked (elimination impossible);
  - ``mix``: both.

  A head that binds only when trained on ``binding`` masks places the fault in the training objective, not
  in the features.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from icmlm_zoo.evaluation.reporting import markdown_table
from icmlm_zoo.training.backbones import create_backbone
from icmlm_zoo.training.data.synthetic import SyntheticScenes, blind_chance
from icmlm_zoo.training.inference import encode_masked_captions, load_run
from icmlm_zoo.transforms import eval_transform

from .fresh_heads import train_fresh_head
from .grounding import binding_items, visual_word_items
from .scene_probes import held_out_scenes

# sklearn (the [eval] extra) is imported inside the probe functions: the rest needs only the trainer

__all__ = ["text_probe", "trunk_probe", "encode_items", "run_binding_diagnosis", "markdown"]

MASK_SETS = ("single", "binding", "mix")


def _fit(x, y):
    from sklearn.linear_model import LogisticRegression
    return LogisticRegression(max_iter=3000, C=0.5).fit(np.asarray(x), np.asarray(y))


def _logistic(x_train, y_train, x_test, y_test) -> float:
    return float(_fit(x_train, y_train).score(np.asarray(x_test), np.asarray(y_test)))


def _majority(y) -> float:
    _, counts = np.unique(np.asarray(y), return_counts=True)
    return float(counts.max() / counts.sum())


def text_probe(train: list[dict], test: list[dict]) -> dict[str, float]:
    """Linear probe from the text state at each binding mask to the shape of the object its phrase names;
    ``train``/``test`` are :func:`encode_items` outputs of binding items."""
    def rows(data):
        return ([s for d in data for s in d["mask_states"]], [sh for d in data for sh in d["named_shapes"]])
    (xa, ya), (xb, yb) = rows(train), rows(test)
    return {"text_named_shape": _logistic(xa, ya, xb, yb), "text_named_shape_majority": _majority(yb)}


def trunk_probe(train: list[dict], test: list[dict]) -> dict[str, float]:
    """Linear probes from the feature cell under each object to its colour and its shape, scored separately
    on one-object and 2-3 object scenes."""
    def rows(data):
        return [(cell, o, d["n_objects"]) for d in data for cell, o in zip(d["object_cells"], d["objects"])]
    a, b = rows(train), rows(test)
    out = {}
    for attr in ("color", "shape"):
        clf = _fit([r[0] for r in a], [r[1][attr] for r in a])
        hit = clf.predict([r[0] for r in b]) == np.array([r[1][attr] for r in b])
        n = np.array([r[2] for r in b])
        out[f"trunk_{attr}_one_object"] = float(hit[n == 1].mean()) if (n == 1).any() else float("nan")
        out[f"trunk_{attr}_multi_object"] = float(hit[n > 1].mean()) if (n > 1).any() else float("nan")
    return out


def _feature_cell(box, size: int, h: int, w: int) -> tuple[int, int]:
    """(row, col) of the ``h x w`` feature cell under the centre of ``box`` in a ``size``-pixel image."""
    x0, y0, x1, y1 = box
    return min(h - 1, int((y0 + y1) / 2 * h // size)), min(w - 1, int((x0 + x1) / 2 * w // size))


def encode_items(run, items: list[dict], batch_size: int = 64) -> list[dict]:
    """Frozen trunk maps and text states of grounding items (``visual_word_items`` / ``binding_items``): per
    item the map (C, h, w), the caption's states (L, width, float16), mask positions, target ids, each mask's
    state and named shape (binding items), and the feature cell under each object."""
    tf, tok, model = eval_transform(run.data_config, full_view=True), run.tokenizer, run.model
    out = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        input_ids, attention, _ = encode_masked_captions(tok, [it["caption"] for it in chunk], max_length=None)
        with torch.no_grad():
            fmap = model.features(torch.stack([tf(it["image"]) for it in chunk]).to(run.device)).float().cpu()
            text = model.encode_text(input_ids.to(run.device), attention.to(run.device)).float().cpu()
        for j, it in enumerate(chunk):
            ids, length = input_ids[j], int(attention[j].sum())
            pos = (ids == tok.mask_token_id).nonzero()[:, 0]
            targets = tok.convert_tokens_to_ids(it["targets"])
            if len(pos) != len(targets):  # a target split into several wordpieces: not scored
                continue
            if "cls" in it:  # a visual-word item: its first mask is scored, as in icmlm-eval grounding
                pos, targets = pos[:1], targets[:1]
            objects = it["objects"]
            h, w = fmap.shape[-2:]
            cells = [_feature_cell(o["box"], it["image"].size[0], h, w) for o in objects]
            by_color = {o["color"]: o["shape"] for o in objects}
            out.append({"fmap": fmap[j], "text": text[j, :length].half(), "positions": pos,
                        "targets": torch.tensor(targets),
                        "mask_states": text[j, pos].numpy(), "named_shapes": [by_color.get(t) for t in it["targets"]],
                        "n_objects": len(objects), "objects": objects, "box": it.get("box"),
                        "image_size": it["image"].size,
                        "object_cells": [fmap[j, :, r, c].numpy() for r, c in cells]})
    return out


def _swap_trunk(run, trunk: str, seed: int) -> None:
    """Put another run's last trunk (or a random one, ``trunk="random"``) into ``run``'s model."""
    if trunk == "random":
        torch.manual_seed(seed)
        backbone = create_backbone(run.config.model.backbone)
    else:
        other = load_run(trunk)
        if other.config.model.backbone != run.config.model.backbone:
            raise ValueError(f"--trunk {trunk} has a {other.config.model.backbone} trunk; the run has "
                             f"{run.config.model.backbone}: compare trunks of one architecture")
        backbone = other.model.backbone
    run.model.backbone = backbone.to(run.device).eval()


def run_binding_diagnosis(run_dir: str, *, train_scenes: int = 9600, test_scenes: int = 400, steps: int = 2000,
                          mask_sets: tuple[str, ...] = MASK_SETS, seed: int = 0, checkpoint: str = "last",
                          trunk: str | None = None, from_run_head: bool = False, batch_size: int = 64,
                          binding_share: float | None = None, device: str = "cpu",
                          quick: bool = False) -> dict[str, Any]:
    """The text, trunk and fresh-head measures for an ``icmlm-train`` run on the embedded scenes: heads are
    trained on the run's own training scenes and scored on held-out ones (the grounding scenes of ``seed``).
    ``trunk``: another run folder whose trunk replaces the run's (e.g. a TP-only run: is binding as easy to
    learn on its features?), or ``random`` for a randomly initialised one; the head's kind, the text encoder and
    the scenes stay the run's. ``from_run_head``: the heads start from the run's trained head instead of a
    random init (is the trained head stuck, or does it learn binding as fast?). ``binding_share``: the share of
    binding items in each ``mix`` batch (default: their share of the two pools), e.g. the share a training
    run's masks give, to ask whether that dose teaches binding at all."""
    if quick:
        train_scenes, test_scenes, steps = 120, 40, 10
    if binding_share is not None and not 0.0 <= binding_share <= 1.0:
        raise ValueError(f"binding_share={binding_share} is not a share: give a number from 0 to 1")
    unknown = set(mask_sets) - set(MASK_SETS)
    if unknown:
        raise ValueError(f"unknown mask sets {sorted(unknown)}; choose from {list(MASK_SETS)}")
    run = load_run(run_dir, checkpoint=checkpoint, device=device)
    if run.model.fusion_kind is None:
        return {"step": run.step, "note": "no masked-word head (TP only)"}
    if run.config.data.kind != "synthetic":
        raise ValueError(f"the binding diagnosis needs a run on the embedded scenes (data.kind=synthetic), not "
                         f"{run.config.data.kind!r}")
    if trunk is not None:
        _swap_trunk(run, trunk, seed)
    size, syn = int(run.config.data.image_size), run.config.data.synthetic
    train_sc = SyntheticScenes(train_scenes, image_size=size, seed=int(syn.seed))
    _, test_sc = held_out_scenes(1, test_scenes, size, seed)
    cache = {"single": encode_items(run, visual_word_items(train_sc, seed=seed + 1)),
             "binding": encode_items(run, binding_items(train_sc))}
    # mix: both pools, in their natural proportion, or with binding items at ``binding_share`` of each batch
    cache["mix"] = (cache["single"] + cache["binding"] if binding_share is None
                    else (cache["single"], cache["binding"], binding_share))
    tests = {"binding": encode_items(run, binding_items(test_sc)),
             "visual": encode_items(run, visual_word_items(test_sc, seed=seed))}
    result: dict[str, Any] = {"step": run.step, "fusion": run.model.fusion_kind, "trunk": trunk or "the run's",
                              "train_scenes": train_scenes,
                              "test_scenes": test_scenes, "steps": steps,
                              "binding_bag_of_colors": float(np.mean([1.0 / d["n_objects"] for d in tests["binding"]
                                                                      for _ in d["targets"]])),
                              "binding_chance": blind_chance("color")}
    result.update(text_probe(cache["binding"], tests["binding"]))
    result.update(trunk_probe(cache["single"], tests["visual"]))
    result["head_init"] = "the run's head" if from_run_head else "random"
    result.update(binding_share=binding_share, batch_size=batch_size)
    result["heads"] = {name: train_fresh_head(run, cache[name], tests, steps=steps, batch_size=batch_size, seed=seed,
                                              from_run_head=from_run_head) for name in mask_sets}
    return result


def markdown(result: dict[str, Any]) -> str:
    """The diagnosis as two short tables (parts, fresh heads) with their controls."""
    if "heads" not in result:
        return f"# Binding diagnosis — `{result.get('run', '')}`\n\n{result.get('note', 'no scores')}\n"
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    r = result
    own = r.get("head_init") == "the run's head"
    share = "" if r.get("binding_share") is None else f"; binding items {pct(r['binding_share'])} % of each mix batch"
    parts = [("text", "named object's shape from the mask state", pct(r["text_named_shape"]),
              f"{pct(r['text_named_shape_majority'])} (majority)")]
    parts += [("trunk", f"{word} from the object's cell, 1 object / 2-3 objects",
               f"{pct(r[f'trunk_{attr}_one_object'])} / {pct(r[f'trunk_{attr}_multi_object'])}", "–")
              for attr, word in (("color", "colour"), ("shape", "shape"))]
    start = next(iter(r["heads"].values()))["curve"][0]  # step 0: the control of every row
    heads = [(f"nothing ({'the run’s head' if own else 'the untrained head'})", pct(start["binding"]), "–",
              pct(start["visual"]), pct(start["pointing"]))]
    heads += [(f"{name} masks", pct(h["binding"]), pct(h["binding_shuffled"]), pct(h["visual"]), pct(h["pointing"]))
              for name, h in r["heads"].items()]
    lines = [f"# Binding diagnosis — `{r.get('run', '')}` (step {r['step']}, {r['fusion']}; trunk: {r['trunk']})", "",
             *markdown_table(("part", "measure", "score (%)", "control (%)"), parts, "llrr"), "",
             f"{'Copies of the run’s' if own else 'Fresh'} {r['fusion']} heads on the frozen features "
             f"({r['steps']} steps of {r.get('batch_size', 64)} items, {r['train_scenes']} training scenes, "
             f"{r['test_scenes']} held-out{share}):", "",
             *markdown_table(("trained on", "binding", "… shuffled images", "visual words", "pointing"), heads,
                             "lrrrr")]
    lines += ["", f"A bag of colours scores about {pct(r['binding_bag_of_colors'])} on binding; chance "
                  f"{pct(r['binding_chance'])}."]
    return "\n".join(lines) + "\n"
