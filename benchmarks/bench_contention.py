"""The demo on a busy CPU: the shortened demo (100 steps, no periodic evaluation) alone, beside one and beside
two CPU-bound processes that this script starts and stops itself, with the entry point's new thread defaults
(OpenMP's passive wait policy, threads from the cores the other processes leave idle at the start: nothing set
by hand) and without them (``ICMLM_ZOO_THREADS=off``: torch's own defaults, as before); and with the new
defaults when the processes start only ``--late`` seconds into the run (after the thread count was chosen).
Runs are interleaved round by round; each figure is the median over the rounds, and each ratio is against the
same setting's run alone (the late rows: against the new defaults alone).

  python benchmarks/bench_contention.py             # 100 steps, 1 round (about 6 runs of the shortened demo)
  python benchmarks/bench_contention.py --rounds 2 --steps 100
  python benchmarks/bench_contention.py --quick     # smoke test (3 steps, no goal verdict)
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

GOALS = {1: 1.5, 2: 2.5}  # beside N CPU-bound processes: at most this many times the time alone
SETTINGS = {"new defaults": True, "torch defaults (ICMLM_ZOO_THREADS=off)": False}
LATE = "new defaults, the processes start {late:g} s into the run"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--hogs", default="0,1,2", help="numbers of CPU-bound processes beside the run")
    parser.add_argument("--only-new", action="store_true", help="skip the runs without the new defaults")
    parser.add_argument("--late", type=float, default=15.0,
                        help="also run beside processes that start this many seconds into the run (0: not)")
    parser.add_argument("--quick", action="store_true", help="3 steps, one small evaluation (smoke test)")
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    overrides = ["eval.every=0"] + (["eval.max_batches=1"] if args.quick else [])
    steps = 3 if args.quick else args.steps
    hogs = [int(h) for h in args.hogs.split(",")]
    settings = {k: (v, 0.0) for k, v in SETTINGS.items() if v or not args.only_new}
    if args.late > 0 and not args.quick:
        settings[LATE.format(late=args.late)] = (True, args.late)

    from common import report
    from demo_runs import child_env, cpu_hogs, demo_command, run_measured, scratch_dir
    runs: dict[str, dict[int, list[dict]]] = {s: {h: [] for h in hogs} for s in settings}
    with scratch_dir("bench_contention_") as tmp:
        k = 0
        for r in range(args.rounds):
            order = [(s, h) for h in hogs for s in settings if h or not settings[s][1]]
            for s, h in (order if r % 2 == 0 else order[::-1]):
                k += 1
                log = Path(tmp) / f"run{k}.log"
                with cpu_hogs(h, delay=settings[s][1]):
                    res = run_measured(demo_command(Path(tmp) / f"run{k}", steps, overrides),
                                       child_env(defaults=settings[s][0]), log)
                res["threads"] = chosen_threads(log.read_text())
                runs[s][h].append(res)
                print(f"round {r}, {s}, beside {h}: wall {res['wall_s']:.1f} s, cpu {res['cpu_s']:.1f} s, "
                      f"threads {res['threads']}", flush=True)
    med = {s: {h: {q: statistics.median(x[q] for x in runs[s][h]) for q in ("wall_s", "cpu_s")}
               for h in hogs if runs[s][h]} for s in settings}
    rows, goals = [], []
    for s in settings:
        ref = s if hogs[0] in med[s] else next(iter(settings))  # the late rows have no run alone: the defaults'
        alone = med[ref][hogs[0]]["wall_s"]
        for h in med[s]:
            m = med[s][h]
            threads = "/".join(sorted({str(x["threads"]) for x in runs[s][h]}))
            rows.append([s, h, threads, f"{m['wall_s']:.1f}", f"{m['cpu_s']:.1f}", f"{m['wall_s'] / alone:.2f}"])
            if s == next(iter(settings)) and settings[s][0] and h in GOALS and hogs[0] == 0 and not args.quick:
                goals.append({"goal": f"shortened demo beside {h} CPU-bound process(es) / alone, new defaults",
                              "measured": m["wall_s"] / alone, "target": f"<= {GOALS[h]}",
                              "met": m["wall_s"] / alone <= GOALS[h]})
    report(args.name or ("contention_quick" if args.quick else "contention"),
           f"The shortened demo ({steps} steps, eval.every=0) beside CPU-bound processes, median of "
           f"{args.rounds} round(s)", ["setting", "CPU-bound processes beside", "intra-op threads chosen", "wall s",
                                       "CPU s (run + workers)", "wall / alone"], rows, goals,
           extra={"runs": runs, "medians": med, "steps": steps, "rounds": args.rounds})
    return 0


def chosen_threads(log: str) -> str:
    """The intra-op thread count the run's log reports ("CPU threads: N (...)"), or "?" ."""
    found = re.search(r"CPU threads: (\d+)", log)
    return found.group(1) if found else "?"


if __name__ == "__main__":
    raise SystemExit(main())
