"""The image transform factory: one place that turns a data config (timm's ``input_size``, ``mean``, ``std``,
``crop_pct``, ``interpolation``) into the training or evaluation transform, through timm's ``create_transform``.

Training: a random resized crop of ``scale=(scale_min, 1)`` (with ``scale_min >= 1``: no augmentation, resize
the short side and centre-crop), an optional horizontal flip, no colour jitter. Evaluation: resize the short side
to ``size / crop_pct``, centre-crop ``size``. Both normalise with the config's mean/std. The training transform
draws from both ``random`` and ``torch``'s generators (timm's crop uses the former, the flip the latter): seed
both for reproducible samples. :func:`eval_transform` is the evaluation transform of a model's own data config: it
refuses a config without mean/std instead of assuming ImageNet's, and ``full_view`` resizes the whole image to the
square input (no crop: an attention grid then covers the whole image).
"""
from __future__ import annotations

from typing import Any, Callable

import timm.data

from .constants import DEFAULT_DATA_CONFIG

__all__ = ["create_image_transform", "eval_transform"]


def create_image_transform(data_config: dict[str, Any], *, training: bool = False, image_size: int | None = None,
                           scale_min: float = 0.08, hflip: bool = False,
                           crop_pct: float | None = None) -> Callable:
    """The transform for ``data_config`` (missing keys from ImageNet defaults); ``image_size`` and ``crop_pct``
    override the config's."""
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


def eval_transform(data_config: dict[str, Any], image_size: int | None = None, *, full_view: bool = False) -> Callable:
    """The evaluation transform of a model's data config (which must name its ``mean`` and ``std``);
    ``image_size`` overrides its size; ``full_view``: resize the whole image to ``size x size``, no crop."""
    missing = [k for k in ("mean", "std") if not data_config.get(k)]
    if missing:
        raise ValueError(f"the data config {dict(data_config)} has no {' or '.join(missing)}: the normalisation "
                         "the weights were trained with is unknown. Load the model through "
                         "icmlm_zoo.backbone_factory.load_backbone (it reads timm's pretrained cfg), or give mean "
                         "and std explicitly")
    if not full_view:
        return create_image_transform(data_config, image_size=image_size)
    size = int(image_size or data_config.get("input_size", DEFAULT_DATA_CONFIG["input_size"])[-1])
    return timm.data.create_transform((3, size, size), is_training=False, crop_pct=1.0, crop_mode="squash",
                                      interpolation=data_config.get("interpolation", "bilinear"),
                                      mean=tuple(data_config["mean"]), std=tuple(data_config["std"]))
