"""Facts used in several places of the package, defined once here."""
from __future__ import annotations

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

__all__ = ["IMAGENET_DEFAULT_MEAN", "IMAGENET_DEFAULT_STD", "DEFAULT_DATA_CONFIG", "HEAD_PREFIXES"]

#: preprocessing assumed for a module that carries no timm pretrained cfg (ImageNet statistics, 224 px)
DEFAULT_DATA_CONFIG = {"input_size": (3, 224, 224), "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
                       "interpolation": "bilinear", "crop_pct": 0.875}

#: state-dict prefixes of classifier heads (dropped when a checkpoint's trunk becomes a backbone)
HEAD_PREFIXES = ("fc.", "classifier.", "head.")
