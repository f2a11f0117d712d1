"""The training sample pipeline shared by every source: decode → transform → tokenise + mask → TP targets.

Randomness is a pure function of ``(seed, epoch, index)`` (masking via numpy, augmentation via a forked torch
RNG), so results do not depend on the number of workers or on resuming. A sample that fails becomes an
error entry that the collate function counts and drops.
"""
from __future__ import annotations

import random
from typing import Any, Callable

import numpy as np
import torch

from ..masking import CaptionMasker, SampleSkipped
from ..tags import split_words
from .records import Record, SampleError, open_image

__all__ = ["SampleBuilder", "ICMLMDataset"]


def _seeded(transform: Callable, image: Any, seed: int) -> Any:
    """``transform(image)`` with torch's and Python's generators seeded (timm's random crop draws from
    ``random``, flips from torch), leaving both generators as they were."""
    state = random.getstate()
    try:
        random.seed(seed)
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed would also queue a seed for every accelerator (a stack
            # trace per sample where none is initialised: 5-10 % of the demo's data time) and leave it set
            torch.default_generator.manual_seed(seed)
            return transform(image)
    finally:
        random.setstate(state)


class SampleBuilder:
    """Turns a :class:`Record` into a training sample dict (or an ``{"error": reason}`` / ``{"skip": reason}``)."""

    def __init__(self, transform: Callable, masker: CaptionMasker | None, tag_index: dict[str, int] | None,
                 *, tp_targets: str = "caption", seed: int = 0) -> None:
        self.transform, self.masker, self.tag_index = transform, masker, tag_index
        self.tp_targets, self.seed = tp_targets, seed

    def __call__(self, rec: Record | None, key: int, epoch: int, get_record: Callable[[], Record] | None = None
                 ) -> dict[str, Any]:
        try:
            if rec is None:
                rec = get_record()
            caption = rec.caption
            if isinstance(caption, bytes):
                try:
                    caption = caption.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise SampleError("bad_caption", "caption bytes are not UTF-8") from e
            if not isinstance(caption, str):
                raise SampleError("bad_caption", f"caption is {type(caption).__name__}, not text")
            if not caption.strip():
                raise SampleError("empty_caption")
            rng = np.random.default_rng([self.seed, epoch, key])
            out: dict[str, Any] = {"caption": caption}
            if self.masker is not None:
                m = self.masker(caption, rng)
                out.update(input_ids=m.input_ids, labels=m.labels, truncated=m.truncated, masked_words=m.masked_words)
            if self.tag_index is not None:
                t = torch.zeros(len(self.tag_index))
                if self.tp_targets == "labels":
                    names = rec.labels or []
                else:
                    names = split_words(caption.lower())
                for w in names:
                    j = self.tag_index.get(w.lower() if isinstance(w, str) else w)
                    if j is not None:
                        t[j] = 1.0
                out["tp"] = t
            image = open_image(rec)
            out["image"] = _seeded(self.transform, image, int(rng.integers(0, 2**62)))
            return out
        except SampleSkipped as e:
            return {"skip": e.reason}
        except SampleError as e:
            return {"error": e.reason, "detail": str(e)}
        except Exception as e:  # any other decode problem of a single sample is counted, not fatal
            return {"error": "other", "detail": f"{type(e).__name__}: {e}"}


class ICMLMDataset(torch.utils.data.Dataset):
    """Map-style data set over a record source (``len``, ``record(i)``)."""

    def __init__(self, source, builder: SampleBuilder) -> None:
        self.source, self.builder, self.epoch = source, builder, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.builder(None, int(i), self.epoch, get_record=lambda: self.source.record(int(i)))
