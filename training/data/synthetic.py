"""A deterministic procedural captioned-scene generator (the embedded default data set).

Each scene holds 1-3 coloured shapes of two sizes on a plain, slightly noisy background, placed in distinct
cells of a 3x3 grid; the caption describes them with a small grammar (varied phrasing). Scene ``i`` of seed
``s`` is a pure function of ``(s, i)``: the same seed gives the same images and captions, another seed gives
unseen scenes (validation uses seed 10_000 by default, the held-out probes 20_000 on). Ground-truth boxes are kept.

The scenes' vocabulary is public here, once: the words of each class (``CLASS_WORDS``: colour, shape, size,
count), their sizes (``CLASS_SIZES``) and the blind chance of naming a masked word of a class
(:func:`blind_chance`, 1/|class|); every evaluation on the scenes takes its chance levels from here.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .records import Record

__all__ = ["COLOR_RGB", "COLORS", "SHAPES", "SIZES", "NUMBERS", "POSITIONS", "WORD_CLASSES", "CLASS_WORDS",
           "CLASS_SIZES", "blind_chance", "SyntheticScenes", "write_jsonl"]

#: colour word -> the RGB it is drawn with
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 235),
    "yellow": (240, 220, 40), "purple": (160, 60, 210), "white": (245, 245, 245),
}
COLORS = tuple(COLOR_RGB)  # the colour words, in the generator's order
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES = {"small": 0.17, "large": 0.30}  # side as a fraction of the image size
# 3x3 grid cell (row, col) -> phrases naming it
POSITIONS: dict[tuple[int, int], tuple[str, ...]] = {
    (0, 0): ("in the top left corner", "at the top left"),
    (0, 1): ("at the top", "near the top"),
    (0, 2): ("in the top right corner", "at the top right"),
    (1, 0): ("on the left", "at the left"),
    (1, 1): ("in the center", "in the middle"),
    (1, 2): ("on the right", "at the right"),
    (2, 0): ("in the bottom left corner", "at the bottom left"),
    (2, 1): ("at the bottom", "near the bottom"),
    (2, 2): ("in the bottom right corner", "at the bottom right"),
}
NUMBERS = {1: "one", 2: "two", 3: "three"}
#: word -> class, used to compute slot-aware chance levels for masked-word accuracy
WORD_CLASSES: dict[str, str] = {**{c: "color" for c in COLORS}, **{s: "shape" for s in SHAPES},
                                **{s: "size" for s in SIZES}, **{"shapes": "count", "objects": "count"},
                                **{n: "count" for n in NUMBERS.values()}}
#: the words of each attribute class a masked word can be scored against
CLASS_WORDS: dict[str, tuple[str, ...]] = {"color": COLORS, "shape": SHAPES, "size": tuple(SIZES),
                                           "count": tuple(NUMBERS.values())}
CLASS_SIZES: dict[str, int] = {cls: len(words) for cls, words in CLASS_WORDS.items()}


def blind_chance(cls: str) -> float:
    """The chance of naming a masked word of class ``cls`` without the image: 1/|class|."""
    return 1.0 / CLASS_SIZES[cls]


def _article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def _noun_phrase(obj: dict, rng: np.random.Generator) -> str:
    form = int(rng.integers(0, 4))  # four draws, three phrasings: "size colour shape" is twice as likely
    if form in (0, 2):
        words = [obj["size"], obj["color"], obj["shape"]]
    elif form == 1:
        words = [obj["color"], obj["shape"]]
    else:
        return f"{_article(obj['size'])} {obj['size']} {obj['shape']} that is {obj['color']}"
    return f"{_article(words[0])} {' '.join(words)}"


def _caption(objects: list[dict], rng: np.random.Generator) -> str:
    n = len(objects)
    clauses = []
    for obj in objects:
        clauses.append((_noun_phrase(obj, rng), POSITIONS[obj["cell"]][int(rng.integers(0, 2))]))
    template = int(rng.integers(0, 6))
    if n == 1 and template == 5:
        np_, pos = clauses[0]
        return f"{pos}, there is {np_}."
    parts = [f"{np_} {pos}" for np_, pos in clauses]
    body = parts[0] if n == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    if template in (0, 5):
        text = body
    elif template == 1:
        text = f"there {'is' if n == 1 else 'are'} {body}"
    elif template == 2:
        text = f"an image of {body}"
    elif template == 3:
        text = f"a picture showing {body}"
    else:
        noun = "shape" if n == 1 else "shapes"
        text = f"{NUMBERS[n]} {noun} on a dark background: {body}"
    return text + "."


class SyntheticScenes:
    """Map-style data set of procedural captioned scenes.

    ``scene(i)`` returns ``{"image": PIL RGB, "caption": str, "objects": [{"shape", "color", "size",
    "box": (x0, y0, x1, y1)}]}``; ``dataset[i]`` is the same dict. ``caption(i)`` and ``objects(i)`` are cheap
    (no drawing).
    """

    def __init__(self, num_images: int, image_size: int = 64, seed: int = 0, max_objects: int = 3,
                 noise: float = 6.0) -> None:
        if num_images < 1 or image_size < 16:
            raise ValueError(f"SyntheticScenes needs num_images >= 1 and image_size >= 16, got "
                             f"{num_images} and {image_size}")
        self.num_images, self.image_size, self.seed = int(num_images), int(image_size), int(seed)
        self.max_objects, self.noise = int(max_objects), float(noise)

    def __len__(self) -> int:
        return self.num_images

    def _layout(self, i: int) -> tuple[list[dict], str, np.random.Generator]:
        if not 0 <= i < self.num_images:
            raise IndexError(f"scene index {i} out of range [0, {self.num_images})")
        rng = np.random.default_rng([self.seed, i, 7919])
        n = int(rng.integers(1, self.max_objects + 1))
        cells = rng.choice(9, size=n, replace=False)
        S = self.image_size
        objects = []
        for c in cells:
            row, col = divmod(int(c), 3)
            size = str(rng.choice(list(SIZES)))
            side = SIZES[size] * S * float(rng.uniform(0.9, 1.1))
            cx = (col + 0.5) * S / 3 + float(rng.uniform(-0.06, 0.06)) * S
            cy = (row + 0.5) * S / 3 + float(rng.uniform(-0.06, 0.06)) * S
            half = side / 2
            box = (max(0, round(cx - half)), max(0, round(cy - half)),
                   min(S, round(cx + half)), min(S, round(cy + half)))
            objects.append({"shape": str(rng.choice(SHAPES)), "color": str(rng.choice(COLORS)),
                            "size": size, "box": box, "cell": (row, col)})
        caption = _caption(objects, rng)
        return objects, caption, rng

    def caption(self, i: int) -> str:
        """The caption of scene ``i`` (without rendering the image)."""
        return self._layout(i)[1]

    def objects(self, i: int) -> list[dict]:
        """The objects of scene ``i`` with their grid ``cell`` (row, col), without rendering the image."""
        return self._layout(i)[0]

    def scene(self, i: int) -> dict[str, Any]:
        """Render scene ``i``: image, caption and objects with pixel boxes."""
        objects, caption, rng = self._layout(i)
        S = self.image_size
        base = rng.integers(25, 80, size=3)
        arr = np.clip(base[None, None, :] + rng.normal(0, self.noise, size=(S, S, 3)), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, "RGB")
        draw = ImageDraw.Draw(img)
        for obj in objects:
            x0, y0, x1, y1 = obj["box"]
            fill = COLOR_RGB[obj["color"]]
            if obj["shape"] == "circle":
                draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=fill)
            elif obj["shape"] == "square":
                draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=fill)
            elif obj["shape"] == "triangle":
                draw.polygon([((x0 + x1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=fill)
            else:  # diamond
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                draw.polygon([(cx, y0), (x1 - 1, cy), (cx, y1 - 1), (x0, cy)], fill=fill)
        out = [{k: o[k] for k in ("shape", "color", "size", "box")} for o in objects]
        return {"image": img, "caption": caption, "objects": out}

    __getitem__ = scene

    def labels(self, i: int) -> list[str]:
        """Object categories (shape names) present in scene ``i`` (the TP_label targets)."""
        return sorted({o["shape"] for o in self._layout(i)[0]})

    def record(self, i: int):
        """Scene ``i`` as a training :class:`~icmlm_zoo.training.data.records.Record`."""
        s = self.scene(i)
        return Record(image=s["image"], caption=s["caption"], labels=sorted({o["shape"] for o in s["objects"]}))

    @staticmethod
    def label_names() -> list[str]:
        """All object categories."""
        return list(SHAPES)


def write_jsonl(scenes: SyntheticScenes, out_dir: str | Path, *, image_format: str = "png") -> Path:
    """Write every scene as ``out_dir/images/NNNNNN.png`` plus ``out_dir/captions.jsonl``.

    Each JSONL line: ``{"image": "images/NNNNNN.png", "caption": ..., "objects": [...], "labels": [...]}``,
    the format :class:`icmlm_zoo.training.data.pairs.PairsSource` reads. Refuses to overwrite an existing file.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    index = out / "captions.jsonl"
    if index.exists():
        raise FileExistsError(f"{index} exists; choose an empty folder")
    digits = max(6, int(math.log10(len(scenes))) + 1)
    with index.open("w") as f:
        for i in range(len(scenes)):
            s = scenes.scene(i)
            rel = f"images/{i:0{digits}d}.{image_format}"
            s["image"].save(out / rel)
            f.write(json.dumps({"image": rel, "caption": s["caption"], "objects": s["objects"],
                                "labels": sorted({o["shape"] for o in s["objects"]})}) + "\n")
    return index
