"""timm entrypoints for the ICMLM backbones; their pretrained cfgs and architectures come from the weights manifest.

The module name is unique on purpose: timm groups models by the last component of the module path, so
``timm.list_models(module='icmlm_backbones')`` lists exactly these.

Registering needs only timm, torch and the manifest: the weight-loading machinery (``icmlm_zoo.pretrained``) is
imported when a model is built. In the console scripts the registration runs while timm is being imported by
some other icmlm_zoo module (see ``icmlm_zoo.registration``); importing more here could re-enter that
half-imported module.
"""
from __future__ import annotations

from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from ..manifest import load_manifest
from .vgg_trunk import IcmlmVGG

_MANIFEST = load_manifest()


def _registry_cfgs() -> dict[str, dict[str, Any]]:
    """``{'model.tag': cfg}`` for every manifest entry; the default tag gets timm's ``*`` marker."""
    cfgs = {}
    for model in _MANIFEST.models:
        default = _MANIFEST.default_tag(model)
        for entry in _MANIFEST.entries(model):
            star = "*" if entry.tag == default else ""
            cfgs[f"{entry.name}{star}"] = _MANIFEST.timm_cfg(entry)
    return cfgs


# timm reads the module-global `default_cfgs` when @register_model runs: it must exist before the entrypoints.
default_cfgs = generate_default_cfgs(_registry_cfgs())

# timm's own ResNet definitions (what timm's resnet18/resnet50 entrypoints pass to ResNet). Each ICMLM ResNet is
# the manifest's `timm_architecture` with its `timm_model_args` laid over: the same pair a weight folder's
# config.json hands plain timm, so both build the same network.
_TIMM_RESNETS: dict[str, dict[str, Any]] = {
    "resnet50": dict(block=Bottleneck, layers=(3, 4, 6, 3)),
    "resnet18": dict(block=BasicBlock, layers=(2, 2, 2, 2)),
}


def resnet_args(variant: str) -> dict[str, Any]:
    """The ``ResNet`` arguments of an ICMLM ResNet, from its manifest entry."""
    info = _MANIFEST.models[variant]
    return dict(_TIMM_RESNETS[info["timm_architecture"]], **info["timm_model_args"])


def _build(variant: str, model_cls, pretrained: bool, arch_feature_cfg: dict | None = None, **kwargs: Any):
    # not at registration: see the module docstring
    from ..pretrained import resolve_pretrained, without_nameless_checkpoint_log

    pretrained_cfg, overlay = resolve_pretrained(
        variant,
        pretrained,
        kwargs.pop("pretrained_cfg", None),
        kwargs.pop("pretrained_cfg_overlay", None),
        cache_dir=kwargs.get("cache_dir"),
    )
    kwargs.setdefault("num_classes", 0)
    # the caller's feature_cfg (e.g. feature_cls='fx') is laid over the architecture's, as timm's own models do
    feature_cfg = dict(arch_feature_cfg or {}, **(kwargs.pop("feature_cfg", None) or {}))
    with without_nameless_checkpoint_log():
        model = build_model_with_cfg(
            model_cls,
            variant,
            pretrained,
            pretrained_cfg=pretrained_cfg,
            pretrained_cfg_overlay=overlay,
            feature_cfg=feature_cfg or None,
            **kwargs,
        )
    for cfg in {id(c): c for c in (getattr(model, "pretrained_cfg", None), getattr(model, "default_cfg", None))
                if isinstance(c, dict)}.values():
        cfg.pop("state_dict", None)  # the weights handed to timm are in the model now: keep no second copy
    return model


def _resnet(variant: str, pretrained: bool, **kwargs: Any) -> ResNet:
    return _build(variant, ResNet, pretrained, **dict(resnet_args(variant), **kwargs))


@register_model
def icmlm_resnet50(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-50 trunk pretrained with ICMLM (head-less; ``num_classes=N`` adds a fresh head)."""
    return _resnet("icmlm_resnet50", pretrained, **kwargs)


@register_model
def icmlm_resnet18(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 trunk for ICMLM (head-less)."""
    return _resnet("icmlm_resnet18", pretrained, **kwargs)


@register_model
def icmlm_resnet_tiny(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """A tiny ResNet (BasicBlock [1,1,1,1], widths 32–256) for the demo and tests (head-less)."""
    return _resnet("icmlm_resnet_tiny", pretrained, **kwargs)


@register_model
def icmlm_vgg16(pretrained: bool = False, **kwargs: Any) -> IcmlmVGG:
    """VGG16 conv trunk (no fc6/fc7) pretrained with ICMLM; loads conv-only checkpoints strictly."""
    # like timm's VGG: features_only defaults to all six levels (five pre-pool maps, the first at stride 1, + pool5)
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3, 4, 5))
    return _build("icmlm_vgg16", IcmlmVGG, pretrained,
                  arch_feature_cfg=dict(flatten_sequential=True, out_indices=out_indices), **kwargs)
