"""Shared helpers of the benchmark scripts: timing (median of repeats after warm-up) and result tables."""
from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

RESULTS = Path(__file__).with_name("results")


def time_it(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> dict:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times; median/min/max seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats}


def environment() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "machine": platform.machine(), "processor": platform.processor() or "unknown",
            "cuda": torch.cuda.is_available(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def report(name: str, title: str, header: list[str], rows: list[list], goals: list[dict],
           extra: dict | None = None) -> str:
    """Print a markdown table and write ``results/<name>.json`` (+ ``.md``); returns the markdown."""
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    if goals:
        lines += ["", "| goal | measured | target | met |", "|---|---|---|---|"]
        lines += [f"| {g['goal']} | {g['measured']:.3f} | {g['target']} | {'yes' if g['met'] else 'NO'} |"
                  for g in goals]
    md = "\n".join(lines)
    print(md)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(md + "\n")
    (RESULTS / f"{name}.json").write_text(json.dumps(
        {"title": title, "header": header, "rows": rows, "goals": goals, "env": environment(), **(extra or {})},
        indent=2, default=str) + "\n")
    return md
