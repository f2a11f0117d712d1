"""ICMLM heads: TP (tag prediction), tfm (transformer fusion), att-fc (attention + MLP fusion)."""
from .attfc import AttFCHead
from .common import PosEmbed2D
from .tfm import TfmHead
from .tp import TPHead

__all__ = ["AttFCHead", "TfmHead", "TPHead", "PosEmbed2D"]
