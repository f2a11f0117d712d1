"""The training precision's autocast context (``train.amp``), shared by the training step and the validation."""
from __future__ import annotations

import contextlib

import torch

from .text_runner import fast_bf16

__all__ = ["autocast", "resolve_amp"]


def resolve_amp(amp: str, device: torch.device) -> str:
    """``train.amp`` with ``auto`` decided for ``device``: ``bf16`` where it computes bf16 natively (CUDA with
    bf16, CPUs with AMX/AVX512-BF16), else ``none``."""
    if amp != "auto":
        return amp
    return "bf16" if fast_bf16(device) else "none"


def autocast(amp: str, device: torch.device):
    """``none``: no autocast; ``bf16`` / ``fp16``: ``torch.autocast`` to that dtype on ``device``'s type; ``auto``
    as :func:`resolve_amp` decides."""
    amp = resolve_amp(amp, device)
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
