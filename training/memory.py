"""Process memory policy of CPU training (``run.retain_memory``): keep freed memory instead of faulting it in
again at every step."""
from __future__ import annotations

import ctypes
import platform
from typing import Any

__all__ = ["retain_freed_memory", "resolve_retain_memory", "loader_worker_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt(3) parameters


def retain_freed_memory(enable: bool = True) -> bool:
    """Keep freed memory in this process instead of returning it to the OS (glibc only; returns whether it
    was applied): large blocks come from the heap and the heap is never trimmed, so the memory a training step
    frees is reused by the next instead of being unmapped and faulted in again page by page (what that costs
    and buys: docs/performance.md, "Speed levers"). Processes forked afterwards (DataLoader workers) inherit
    the setting. ``enable=False`` restores glibc's defaults."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # pragma: no cover - glibc reported but not loadable
        return False
    if enable:
        ok = libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    else:
        ok = libc.mallopt(_M_MMAP_MAX, 65536) and libc.mallopt(_M_TRIM_THRESHOLD, 128 * 1024)
        libc.malloc_trim(0)
    return bool(ok)


def resolve_retain_memory(value: Any, device_type: str) -> bool:
    """``run.retain_memory``: ``auto`` = on when training on the CPU, else the given boolean."""
    if value == "auto":
        return device_type == "cpu"
    return bool(value)


def loader_worker_memory(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: glibc's defaults again in a loader worker (large blocks mapped afresh and
    unmapped when freed, the heap trimmed). A forked worker inherits :func:`retain_freed_memory` and its parent's
    heap, so its own large buffers (decoded images, batches) were carved out of the blocks the training process
    had freed, and every page they touched was copied (copy-on-write): private memory that grew with the parent
    (docs/performance.md, "Memory")."""
    retain_freed_memory(False)
