"""Imported first by every benchmark script (its name sorts before every other import): puts the repository and
benchmarks/ on ``sys.path`` and sets the environment the measurements need, before torch is imported."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# On a shared machine, OpenMP threads that spin-wait at barriers while other processes hold the cores make
# small ops far slower (docs/performance.md, "How it is measured"). Only effective when set before torch is
# imported (i.e. when a script is run, not when a test imports it after torch).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
