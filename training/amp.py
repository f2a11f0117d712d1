"""The training precision's autocast context (``train.amp``), shared by the training step and the validation."""
from __future__ import annotations

import contextlib

import torch

__all__ = ["autocast"]


def autocast(amp: str, device: torch.device):
    """``none``: no autocast; ``bf16`` / ``fp16``: ``torch.autocast`` to that dtype on ``device``'s type."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
