"""The image transform factory: one place that turns a data config (timm's ``input_size``, ``mean``, ``std``,
``crop_pct``, ``interpolation``) into the training or evaluation transform, through timm's ``create_transform``.

Training: a random resized crop of ``scale=(scale_min, 1)`` (with ``scale_min >= 1``: no augmentation, resize
the short side and centre-crop), an optional horizontal flip, no colour jitter. Evaluation: resize the short side
to ``size / crop_pct``, centre-crop ``size``. Both normalise with the config's mean/std. The training transform
draws from both ``random`` and ``torch``'s generators (timm's crop uses the former, the flip the latter): seed
both for reproducible samples.
"""
from __future__ import annotations

from typing import Any, Callable

from .constants import DEFAULT_DATA_CONFIG

__all__ = ["create_image_transform"]


def create_image_transform(data_config: dict[str, Any], *, training: bool = False, image_size: int | None = None,
                           scale_min: float = 0.08, hflip: bool = False,
                           crop_pct: float | None = None) -> Callable:
    """The transform for ``data_config`` (missing keys from ImageNet defaults); ``image_size`` and ``crop_pct``
    override the config's."""
    import timm.data

    cfg = {**DEFAULT_DATA_CONFIG, **{k: v for k, v in data_config.items() if k in DEFAULT_DATA_CONFIG}}
    if image_size:
        cfg["input_size"] = (3, int(image_size), int(image_size))
    if crop_pct:
        cfg["crop_pct"] = float(crop_pct)
    if not training:
        return timm.data.create_transform(**cfg, is_training=False)
    return timm.data.create_transform(cfg["input_size"], is_training=True, no_aug=scale_min >= 1,
                                      scale=(min(scale_min, 1.0), 1.0), hflip=0.5 if hflip else 0.0,
                                      color_jitter=None, interpolation=cfg["interpolation"], mean=cfg["mean"],
                                      std=cfg["std"])
