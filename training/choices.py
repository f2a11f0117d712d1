"""The allowed values of the config's choice keys that code outside the config also names: one source for both
(:mod:`~icmlm_zoo.training.config_sections`, which checks them, and the modules that act on them)."""
from __future__ import annotations

__all__ = ["TEXT_PRECISIONS", "OPTIM_IMPLS", "LOGITS_AT", "FUSION_IMPLS", "AMP_MODES", "DATA_KINDS"]

TEXT_PRECISIONS = ("auto", "fp32", "bf16", "fp16")   # text.precision
OPTIM_IMPLS = ("auto", "fused", "foreach", "loop")   # optim.impl
LOGITS_AT = ("masked", "all")                        # model.logits
FUSION_IMPLS = ("fast", "reference")                 # model.fusion_impl
AMP_MODES = ("none", "bf16", "fp16", "auto")         # train.amp (auto: bf16 where native, else none)
DATA_KINDS = ("synthetic", "coco", "vg", "pairs", "webdataset")  # data.kind: the table in training/data/__init__.py
