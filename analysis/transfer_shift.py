"""The shifted renderer of the transfer test: the same scenes, drawn differently from training.

``shift_scene`` post-processes a rendered scene (the generator's default output is unchanged): the objects
are cut out of their plain background, scaled down (0.65-0.8×) and laid at a random offset onto a textured
background (dark diagonal stripes of two random tones with stronger pixel noise); the boxes move with them.
Object colours and shapes stay as they were, so every label still holds.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

__all__ = ["shift_scene", "textured_background"]


def textured_background(size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size, 3) uint8 stripes of two dark tones at a random angle and period, plus noise."""
    tones = rng.integers(20, 90, size=(2, 3))
    period = float(rng.uniform(5, 12))
    angle = float(rng.uniform(0, np.pi))
    yy, xx = np.mgrid[0:size, 0:size]
    phase = (xx * np.cos(angle) + yy * np.sin(angle)) / period
    stripe = (np.floor(phase) % 2).astype(int)
    img = tones[stripe] + rng.normal(0, 12.0, size=(size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def shift_scene(image: Image.Image, boxes: Sequence[Sequence[float]], rng: np.random.Generator
                ) -> tuple[Image.Image, list[tuple[float, float, float, float]]]:
    """The scene re-rendered (see the module doc) and its boxes (x0, y0, x1, y1) in the new image."""
    size = image.size[0]
    arr = np.asarray(image.convert("RGB")).astype(np.float32)
    background = np.median(arr.reshape(-1, 3), axis=0)
    mask = np.linalg.norm(arr - background, axis=2) > 45.0  # the objects (saturated or bright) vs. dark ground
    scale = float(rng.uniform(0.65, 0.8))
    new = max(1, round(size * scale))
    small = np.asarray(image.convert("RGB").resize((new, new), Image.BILINEAR))
    small_mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((new, new), Image.BILINEAR)) > 127
    ox, oy = (int(v) for v in rng.integers(0, size - new + 1, size=2))
    canvas = textured_background(size, rng)
    region = canvas[oy:oy + new, ox:ox + new]
    region[small_mask] = small[small_mask]
    moved = [(x0 * scale + ox, y0 * scale + oy, x1 * scale + ox, y1 * scale + oy) for x0, y0, x1, y1 in boxes]
    return Image.fromarray(canvas, "RGB"), moved
