"""Visual Genome: ``region_descriptions.json`` (+ ``image_data.json`` for file names) and an image folder.

Each region phrase is one sample paired with its whole image (ICMLM uses image-level captions; we do not
crop to the region). Regions smaller than ``min_region_frac`` of the image area are dropped when
``image_data.json`` gives image sizes.
"""
from __future__ import annotations

import json
from pathlib import Path

from .records import CaptionedImageList, Record

__all__ = ["VisualGenome"]


class VisualGenome(CaptionedImageList):
    def __init__(self, regions: str | Path, images: str | Path, image_data: str | Path | None = None,
                 min_region_frac: float = 0.0) -> None:
        reg_path = Path(regions)
        if not reg_path.is_file():
            raise FileNotFoundError(f"VG region descriptions {reg_path} not found (data.vg.regions)")
        if not Path(images).is_dir():
            raise FileNotFoundError(f"VG image folder {images} not found (data.vg.images)")
        self.root = Path(images)
        meta: dict[int, dict] = {}
        if image_data:
            for im in json.loads(Path(image_data).read_text(encoding="utf-8")):
                meta[im.get("image_id", im.get("id"))] = im
        self.items: list[tuple[str, str]] = []
        for entry in json.loads(reg_path.read_text(encoding="utf-8")):
            image_id = entry.get("id", entry.get("image_id"))
            info = meta.get(image_id, {})
            url = info.get("url")
            file = url.rsplit("/", 1)[-1] if url else f"{image_id}.jpg"
            area = (info.get("width") or 0) * (info.get("height") or 0)
            for r in entry.get("regions", []):
                if area and min_region_frac > 0 and r.get("width", 0) * r.get("height", 0) < min_region_frac * area:
                    continue
                self.items.append((file, r.get("phrase")))

    def record(self, i: int) -> Record:
        file, phrase = self.items[i]
        return Record(image_path=self.root / file, caption=phrase)

    def label_names(self) -> list[str]:
        return []
