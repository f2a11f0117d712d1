"""Detection scenes: the embedded generator's scenes with their own boxes, as a COCO-format data set.

``write_coco(out_dir, n_scenes=..., seed=..., size=...)`` writes ``out_dir/images/NNNNNN.png`` and
``out_dir/annotations.json`` (COCO: ``images``, ``annotations`` with ``bbox`` in x, y, w, h, ``area``,
``iscrowd`` = 0, ``categories``), the files detectron2's and mmdet's COCO loaders read. ``detection_scenes``
is the in-memory equivalent; ``coco_ap`` scores detections with pycocotools' ``COCOeval`` (AP, AP50).

Two label sets: ``shape`` (4 classes) and ``shape_colour`` (24 classes, "red circle", ...), the second needs
the colour bound to the object. ``seed`` indexes the held-out detection streams: the generator seed is
``DETECTION_SEED_BASE + seed`` (30 000 on), apart from pretraining (0), validation (10 000) and the
frozen-probe scenes (20 000 on). ``shifted=True`` renders the same scenes differently
(:mod:`~icmlm_zoo.analysis.transfer_shift`: textured background, objects scaled down), boxes moved with them.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from icmlm_zoo.training.data.synthetic import COLORS, SHAPES, SyntheticScenes

from .transfer_shift import shift_scene

# pycocotools (the [eval] extra) is imported inside coco_ap only: writing scenes needs no optional extra

__all__ = ["DETECTION_SEED_BASE", "LABEL_SETS", "category_names", "shape_of_category", "detection_scenes",
           "coco_dataset", "write_coco", "coco_ap"]

DETECTION_SEED_BASE = 30_000
LABEL_SETS = ("shape", "shape_colour")


def category_names(label_set: str) -> list[str]:
    """Class names of a label set, in category-id order (ids start at 1)."""

    if label_set == "shape":
        return list(SHAPES)
    if label_set == "shape_colour":
        return [f"{c} {s}" for s in SHAPES for c in COLORS]
    raise ValueError(f"label_set must be one of {LABEL_SETS}, got {label_set!r}")


def shape_of_category() -> dict[int, int]:
    """``shape_colour`` category id -> ``shape`` category id (a shape × colour detector read as a shape one)."""
    shapes = category_names("shape")
    return {i + 1: shapes.index(name.split()[1]) + 1 for i, name in enumerate(category_names("shape_colour"))}


def _category(obj: dict, label_set: str, names: list[str]) -> int:
    name = obj["shape"] if label_set == "shape" else f"{obj['color']} {obj['shape']}"
    return names.index(name) + 1


def detection_scenes(n_scenes: int, *, seed: int, size: int, label_set: str = "shape",
                     shifted: bool = False) -> list[dict[str, Any]]:
    """Scenes ``[{"image": PIL RGB, "boxes": (n, 4) float x0 y0 x1 y1, "labels": (n,) category ids,
    "objects": the generator's objects}]`` of held-out stream ``seed`` (see the module doc)."""
    names = category_names(label_set)
    gen = SyntheticScenes(n_scenes, image_size=size, seed=DETECTION_SEED_BASE + seed)
    out = []
    for i in range(n_scenes):
        s = gen.scene(i)
        image, boxes = s["image"], [o["box"] for o in s["objects"]]
        if shifted:
            image, boxes = shift_scene(image, boxes, np.random.default_rng([DETECTION_SEED_BASE + seed, i, 4242]))
        out.append({"image": image, "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                    "labels": np.asarray([_category(o, label_set, names) for o in s["objects"]], dtype=np.int64),
                    "objects": s["objects"]})
    return out


def coco_dataset(scenes: Sequence[dict[str, Any]], label_set: str,
                 file_names: Sequence[str] | None = None) -> dict[str, Any]:
    """The COCO ground-truth dict of ``scenes`` (image ids 1..N in order, annotation ids 1..)."""
    anns, images = [], []
    for k, s in enumerate(scenes):
        w, h = s["image"].size
        images.append({"id": k + 1, "width": w, "height": h,
                       "file_name": file_names[k] if file_names else f"{k + 1:06d}.png"})
        for (x0, y0, x1, y1), label in zip(s["boxes"].tolist(), s["labels"].tolist()):
            bw, bh = x1 - x0, y1 - y0
            anns.append({"id": len(anns) + 1, "image_id": k + 1, "category_id": int(label),
                         "bbox": [x0, y0, bw, bh], "area": bw * bh, "iscrowd": 0})
    cats = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(category_names(label_set))]
    return {"info": {"description": f"icmlm-zoo synthetic detection scenes ({label_set})"},
            "images": images, "annotations": anns, "categories": cats}


def write_coco(out_dir: str | Path, *, n_scenes: int, seed: int, size: int, label_set: str = "shape",
               shifted: bool = False) -> tuple[Path, Path]:
    """Write ``out_dir/images/*.png`` and ``out_dir/annotations.json``; returns (images folder, json path).

    Refuses a folder that already holds an ``annotations.json`` (nothing of yours is overwritten).
    """
    out = Path(out_dir)
    ann_path, img_dir = out / "annotations.json", out / "images"
    if ann_path.exists():
        raise FileExistsError(f"{ann_path} exists; choose an empty folder")
    img_dir.mkdir(parents=True, exist_ok=True)
    scenes = detection_scenes(n_scenes, seed=seed, size=size, label_set=label_set, shifted=shifted)
    names = [f"{k + 1:06d}.png" for k in range(len(scenes))]
    for s, name in zip(scenes, names):
        s["image"].save(img_dir / name)
    ann_path.write_text(json.dumps(coco_dataset(scenes, label_set, names)))
    return img_dir, ann_path


def coco_ap(gt: dict[str, Any], detections: Sequence[dict[str, Any]]) -> dict[str, float]:
    """COCO box AP and AP50 (pycocotools ``COCOeval``) of ``detections`` ``[{"image_id", "category_id",
    "bbox": [x, y, w, h], "score"}]`` against the ground-truth dict ``gt``; no detection scores 0."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not detections:
        return {"AP": 0.0, "AP50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = json.loads(json.dumps(gt))  # pycocotools adds keys; keep the caller's dict intact
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([dict(d) for d in detections])
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"AP": max(0.0, float(ev.stats[0])), "AP50": max(0.0, float(ev.stats[1]))}
