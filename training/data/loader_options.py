"""DataLoader options resolved from the ``data`` config section (pinned memory, prefetch)."""
from __future__ import annotations

from typing import Any

__all__ = ["loader_kwargs"]


def loader_kwargs(data_cfg: dict, device_type: str) -> dict[str, Any]:
    """Extra DataLoader arguments: ``pin_memory`` (auto = on CUDA) and ``prefetch_factor`` (with workers)."""
    pin = data_cfg.get("pin_memory", "auto")
    out: dict[str, Any] = {"pin_memory": (device_type == "cuda") if pin == "auto" else bool(pin)}
    if data_cfg.get("num_workers", 0) > 0:
        out["prefetch_factor"] = int(data_cfg.get("prefetch_factor", 2) or 2)
    return out
