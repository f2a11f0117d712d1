"""The record every data source yields, and the error type for a sample that cannot be used."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

__all__ = ["CaptionedImageList", "Record", "SampleError", "open_image"]


class SampleError(Exception):
    """A sample that failed to load; ``reason`` is a short counter name (``missing_image``, ...)."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason


@dataclass
class Record:
    """One image/caption sample: an image (path, bytes or PIL image), a caption, optional labels."""
    caption: Any
    image_path: Path | None = None
    image: Any = None
    labels: list[str] | None = None


class CaptionedImageList:
    """Base of the annotation-file sources: ``items`` are tuples ``(file, caption, ...)`` under ``root``."""

    root: Path
    items: list[tuple]

    def __len__(self) -> int:
        return len(self.items)

    def caption(self, i: int) -> str:
        """The raw caption of sample ``i`` ("" when the annotation holds no string)."""
        c = self.items[i][1]
        return c if isinstance(c, str) else ""


def open_image(rec: Record) -> Image.Image:
    """Decode the record's image to RGB; raise :class:`SampleError` for a missing or corrupt image."""
    try:
        if rec.image is not None:
            if isinstance(rec.image, Image.Image):
                return rec.image.convert("RGB")
            img = Image.open(io.BytesIO(rec.image))
        else:
            img = Image.open(rec.image_path)
        img.load()
        return img.convert("RGB")
    except FileNotFoundError as e:
        raise SampleError("missing_image", str(rec.image_path)) from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise SampleError("corrupt_image", f"{rec.image_path}: {e}") from e
