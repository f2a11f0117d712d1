"""The demo's speed levers, side by side: the (shortened) demo run with each set of config overrides, in
interleaved rounds (order reversed every other round), reporting wall time and the CPU time of the run and its
loader workers. On a shared machine the CPU time is the steadier figure; ratios are against the first variant.

  python benchmarks/bench_demo.py                              # the default levers, 100 steps, 2 rounds
  python benchmarks/bench_demo.py --steps 0 --rounds 1 --variants "preset=;amp=train.amp=auto"
  python benchmarks/bench_demo.py --quick                       # smoke test (a few steps)
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT_VARIANTS = ("base=eval.every=0;"
                    "bf16=eval.every=0,train.amp=bf16;"
                    "auto=eval.every=0,train.amp=auto;"
                    "workers0=eval.every=0,data.num_workers=0;"
                    "cache=eval.every=0,text.cache_size=50000;"
                    "channels_last=eval.every=0,model.channels_last=true")


def parse_variants(spec: str) -> dict[str, list[str]]:
    """``name=key=value,key=value;name2=...`` -> {name: [overrides]} (an empty list: the preset as it is)."""
    out: dict[str, list[str]] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        name, _, overrides = part.partition("=")
        out[name.strip()] = [o.strip() for o in overrides.split(",") if o.strip()]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="training steps per run (0 = the preset's own)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (medians over them)")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help="'name=k=v,k=v;name2=...'; the first is the "
                        "reference of the ratios")
    parser.add_argument("--memory", action="store_true", help="also sample the peak PSS of each run's processes")
    parser.add_argument("--quick", action="store_true", help="3 steps, 1 round, two variants (smoke test)")
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.rounds = 3, 1
        args.variants = "base=eval.every=0,eval.max_batches=1;auto=eval.every=0,eval.max_batches=1,train.amp=auto"
    variants = parse_variants(args.variants)

    from common import report
    from demo_runs import child_env, demo_command, run_measured, scratch_dir
    results: dict[str, list[dict]] = {v: [] for v in variants}
    with scratch_dir("bench_demo_") as tmp:
        for r in range(args.rounds):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for name in order:
                out = Path(tmp) / f"{name}-{r}"
                cmd = demo_command(out, args.steps or None, variants[name])
                res = run_measured(cmd, child_env(), Path(tmp) / f"{name}-{r}.log", memory=args.memory)
                results[name].append(res)
                print(f"round {r} {name}: wall {res['wall_s']:.1f} s, cpu {res['cpu_s']:.1f} s", flush=True)
    ref = next(iter(variants))
    med = {v: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for v, rs in results.items()}
    rows = []
    for v in variants:
        m = med[v]
        rows.append([v, " ".join(variants[v]) or "(preset)", f"{m['wall_s']:.1f}", f"{m['cpu_s']:.1f}",
                     f"{m['wall_s'] / med[ref]['wall_s']:.3f}", f"{m['cpu_s'] / med[ref]['cpu_s']:.3f}",
                     f"{m['pss_mb']:.0f}" if args.memory else "-"])
    report(args.name or ("demo_quick" if args.quick else "demo_levers"),
           f"The demo's levers: {args.steps or 'all'} steps, median of {args.rounds} interleaved round(s)",
           ["variant", "overrides", "wall s", "CPU s (user+sys)", "wall / first", "CPU / first", "peak PSS MB"],
           rows, [], extra={"runs": results, "medians": med, "steps": args.steps, "rounds": args.rounds})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
