"""Backbone creation through timm (``import icmlm_zoo`` registers the ``icmlm_*`` names)."""
from __future__ import annotations

import torch.nn as nn

__all__ = ["ensure_registered", "create_backbone"]


def ensure_registered(name: str) -> None:
    """Import ``icmlm_zoo`` (registers the backbones) and check that timm knows ``name``."""
    import timm
    try:
        import icmlm_zoo  # noqa: F401
    except ImportError:
        pass
    if not timm.is_model(name):
        raise ValueError(f"unknown backbone '{name}'; icmlm backbones: {timm.list_models('icmlm_*')} "
                         "(any timm model name with forward_features also works)")


def create_backbone(name: str) -> nn.Module:
    """A randomly initialised head-less timm trunk (ICMLM trains it from scratch)."""
    import timm
    ensure_registered(name)
    return timm.create_model(name, pretrained=False, num_classes=0)
