"""A run's image transforms: :func:`icmlm_zoo.transforms.create_image_transform` with the backbone's
pretrained cfg (mean/std/interpolation/crop_pct) and the run's ``data`` section (size, scale_min, hflip,
eval_crop_pct)."""
from __future__ import annotations

from typing import Any, Callable

import torch

from icmlm_zoo.transforms import create_image_transform

__all__ = ["backbone_norm", "run_transforms"]


def backbone_norm(model_name: str) -> dict[str, Any]:
    """mean/std/crop_pct/interpolation of a timm backbone's pretrained cfg (model built on the meta device)."""
    import timm
    from .. import backbones
    backbones.ensure_registered(model_name)
    with torch.device("meta"):
        m = timm.create_model(model_name, pretrained=False, num_classes=0)
    return timm.data.resolve_model_data_config(m)


def run_transforms(backbone: str, data_cfg: dict[str, Any]) -> tuple[Callable, Callable]:
    """(training transform, evaluation transform) of a run with this backbone and ``data`` config section."""
    norm = backbone_norm(backbone)
    size = data_cfg["image_size"]
    train = create_image_transform(norm, training=True, image_size=size, scale_min=data_cfg["scale_min"],
                                   hflip=data_cfg["hflip"])
    evaluation = create_image_transform(norm, image_size=size, crop_pct=data_cfg["eval_crop_pct"])
    return train, evaluation
