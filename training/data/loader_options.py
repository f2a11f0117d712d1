"""DataLoader options resolved from the ``data`` config section (pinned memory, prefetch)."""
from __future__ import annotations

from typing import Any

from ..config_sections import DataSection

__all__ = ["loader_kwargs"]


def loader_kwargs(d: DataSection, device_type: str, num_workers: int | None = None) -> dict[str, Any]:
    """DataLoader arguments from the ``data`` section: ``num_workers`` (``data.num_workers`` unless given),
    ``pin_memory`` (auto = on CUDA) and ``prefetch_factor`` (with workers)."""
    workers = d.num_workers if num_workers is None else num_workers
    out: dict[str, Any] = {"num_workers": workers,
                           "pin_memory": (device_type == "cuda") if d.pin_memory == "auto" else bool(d.pin_memory)}
    if workers > 0:
        out["prefetch_factor"] = d.prefetch_factor
    return out
