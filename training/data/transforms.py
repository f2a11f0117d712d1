"""Image transforms (torchvision), normalised with the backbone's pretrained cfg."""
from __future__ import annotations

import torch
from torchvision import transforms as T

__all__ = ["backbone_norm", "train_transform", "eval_transform"]

_INTERP = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC,
           "nearest": T.InterpolationMode.NEAREST}


def backbone_norm(model_name: str) -> dict:
    """mean/std/crop_pct/interpolation of a timm backbone's pretrained cfg (model built on the meta device)."""
    import timm
    from .. import backbones
    backbones.ensure_registered(model_name)
    with torch.device("meta"):
        m = timm.create_model(model_name, pretrained=False, num_classes=0)
    return timm.data.resolve_model_data_config(m)


def train_transform(size: int, mean, std, *, scale_min: float = 0.7, hflip: bool = False,
                    interpolation: str = "bilinear") -> T.Compose:
    """RandomResizedCrop(scale=(scale_min, 1)) (plain resize when scale_min >= 1), optional flip, normalise."""
    interp = _INTERP.get(interpolation, T.InterpolationMode.BILINEAR)
    ops = [T.Resize((size, size), interpolation=interp) if scale_min >= 1
           else T.RandomResizedCrop(size, scale=(scale_min, 1.0), interpolation=interp)]
    if hflip:
        ops.append(T.RandomHorizontalFlip())
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(ops)


def eval_transform(size: int, mean, std, *, crop_pct: float = 0.875, interpolation: str = "bilinear") -> T.Compose:
    """Resize the short side to ``size / crop_pct``, centre-crop ``size``, normalise."""
    interp = _INTERP.get(interpolation, T.InterpolationMode.BILINEAR)
    return T.Compose([T.Resize(int(round(size / crop_pct)), interpolation=interp), T.CenterCrop(size),
                      T.ToTensor(), T.Normalize(mean, std)])
