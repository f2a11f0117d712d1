"""COCO captions: ``captions_*.json`` + image folder; ``instances_*.json`` gives TP_label categories."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from .records import CaptionedImageList, Record

__all__ = ["CocoCaptions"]


class CocoCaptions(CaptionedImageList):
    """One sample per (image, caption) pair, in annotation-id order."""

    def __init__(self, captions: str | Path, images: str | Path, instances: str | Path | None = None) -> None:
        cap_path = Path(captions)
        if not cap_path.is_file():
            raise FileNotFoundError(f"COCO captions file {cap_path} not found (data.coco.captions)")
        if not Path(images).is_dir():
            raise FileNotFoundError(f"COCO image folder {images} not found (data.coco.images)")
        data = json.loads(cap_path.read_text(encoding="utf-8"))
        self.root = Path(images)
        files = {im["id"]: im["file_name"] for im in data["images"]}
        anns = sorted(data["annotations"], key=lambda a: a["id"])
        self.items = [(files[a["image_id"]], a.get("caption"), a["image_id"]) for a in anns if a["image_id"] in files]
        self.labels: dict[int, list[str]] = {}
        self._names: list[str] = []
        if instances:
            inst = json.loads(Path(instances).read_text(encoding="utf-8"))
            cats = {c["id"]: c["name"] for c in inst["categories"]}
            self._names = [cats[k] for k in sorted(cats)]
            per_image: dict[int, set[str]] = defaultdict(set)
            for a in inst["annotations"]:
                per_image[a["image_id"]].add(cats[a["category_id"]])
            self.labels = {k: sorted(v) for k, v in per_image.items()}

    def record(self, i: int) -> Record:
        file, caption, image_id = self.items[i]
        return Record(image_path=self.root / file, caption=caption,
                      labels=self.labels.get(image_id, []) if self._names else None)

    def label_names(self) -> list[str]:
        return list(self._names)
