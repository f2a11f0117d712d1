"""ICMLM backbones registered in timm (importing this module registers them)."""
from .icmlm_backbones import icmlm_resnet18, icmlm_resnet50, icmlm_resnet_tiny, icmlm_vgg16
from .vgg_trunk import IcmlmVGG

__all__ = ["IcmlmVGG", "icmlm_resnet18", "icmlm_resnet50", "icmlm_resnet_tiny", "icmlm_vgg16"]
