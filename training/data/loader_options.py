"""DataLoader options resolved from the ``data`` config section (pinned memory, prefetch)."""
from __future__ import annotations

from typing import Any

from ..config_sections import DataSection

__all__ = ["loader_kwargs"]


def loader_kwargs(d: DataSection, device_type: str) -> dict[str, Any]:
    """Extra DataLoader arguments from the ``data`` section: ``pin_memory`` (auto = on CUDA) and
    ``prefetch_factor`` (with workers)."""
    out: dict[str, Any] = {"pin_memory": (device_type == "cuda") if d.pin_memory == "auto" else bool(d.pin_memory)}
    if d.num_workers > 0:
        out["prefetch_factor"] = d.prefetch_factor
    return out
