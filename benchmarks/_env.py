"""Imported first by every benchmark script (its name sorts before every other import): puts the repository and
benchmarks/ on ``sys.path`` and sets the environment the measurements need, before torch is imported."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _configure_cpu_threads() -> None:
    """The trainer's busy-CPU defaults (OpenMP's passive wait policy, threads = free cores; docs/performance.md),
    set before torch is imported. ``icmlm_zoo/cpu_threads.py`` is loaded by its path: importing the
    ``icmlm_zoo`` package would import torch first. Only effective when a script is run, not when a test imports
    it after torch."""
    spec = importlib.util.spec_from_file_location("_icmlm_cpu_threads", ROOT / "icmlm_zoo" / "cpu_threads.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    module.configure_cpu_threads()


_configure_cpu_threads()
