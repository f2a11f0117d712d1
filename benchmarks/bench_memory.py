"""The demo's memory: peak proportional set size (PSS) of ``icmlm-train --preset demo`` and its DataLoader
workers together, sampled from /proc/PID/smaps_rollup every 0.25 s over the whole run (start-up, training, the
final evaluation, the figures and the export). PSS splits a page shared by N processes N ways, so the sum is what
the run holds; RSS would count the pages a forked worker shares with the main process twice.

  python benchmarks/bench_memory.py                 # the full demo, as a user runs it (goal: <= 1200 MB)
  python benchmarks/bench_memory.py --steps 100 --variants "1 worker=;0 workers=data.num_workers=0"
  python benchmarks/bench_memory.py --quick         # smoke test (3 steps)
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

GOAL_MB = 1200.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=0, help="training steps (0 = the whole demo)")
    parser.add_argument("--variants", default="demo=", help="'name=k=v,k=v;name2=...' config overrides per run")
    parser.add_argument("--quick", action="store_true", help="3 steps, one small evaluation (smoke test)")
    parser.add_argument("--keep", metavar="DIR", help="keep the run folders and logs in DIR (default: a temporary "
                        "folder, removed)")
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    from bench_demo import parse_variants
    variants = parse_variants(args.variants)
    if args.quick:
        args.steps = 3
        variants = {k: [*v, "eval.max_batches=1"] for k, v in variants.items()}

    from common import report
    from demo_runs import child_env, demo_command, run_measured, scratch_dir
    results = {}
    with (contextlib.nullcontext(args.keep) if args.keep else scratch_dir("bench_memory_")) as tmp:
        Path(tmp).mkdir(parents=True, exist_ok=True)
        for i, (name, overrides) in enumerate(variants.items()):
            cmd = demo_command(Path(tmp) / f"run{i}", args.steps or None, overrides)
            results[name] = run_measured(cmd, child_env(), Path(tmp) / f"run{i}.log", memory=True)
            r = results[name]
            print(f"{name}: peak PSS {r['pss_mb']:.0f} MB over {r['processes']} process(es), wall {r['wall_s']:.1f} s,"
                  f" cpu {r['cpu_s']:.1f} s", flush=True)
    rows = [[name, " ".join(variants[name]) or "(preset)", f"{r['pss_mb']:.0f}", f"{r['main_pss_mb']:.0f}",
             f"{r['others_pss_mb']:.0f}", r["processes"], f"{r['alone_mb']:.0f}", f"{r['main_peak_rss_mb']:.0f}",
             f"{r['workers_peak_uss_mb']:.0f}", f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}"]
            for name, r in results.items()]
    first = next(iter(results.values()))
    goals = [] if (args.quick or args.steps) else [
        {"goal": "demo peak PSS, all processes (MB)", "measured": first["pss_mb"], "target": f"<= {GOAL_MB:.0f}",
         "met": first["pss_mb"] <= GOAL_MB}]
    report(args.name or ("memory_quick" if args.quick else "memory"),
           f"The demo's peak PSS ({args.steps or 'all'} steps), main process + loader workers",
           ["run", "overrides", "peak PSS MB (all)", "main at peak", "workers at peak", "processes",
            "main RSS + workers' private MB (peak)", "main's peak RSS", "workers' peak private", "wall s", "CPU s"],
           rows, goals, extra={"runs": results, "steps": args.steps})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
