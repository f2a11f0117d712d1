"""The demo's training step and data, in-process, lever by lever: the demo preset's model (icmlm_resnet_tiny +
att-fc + TP, MiniLM, batch 32 at 96 px) stepped on the same batches under each setting, in interleaved rounds,
on the process CPU clock (``--threads 1``: the time one core takes, robust on a shared machine), plus the cost of
making a batch (rendering, transforms, tokenising and masking) in one process, and of one held-out evaluation.

  python benchmarks/bench_demo_step.py            # fp32 / bf16 autocast x NCHW / channels_last, text cache
  python benchmarks/bench_demo_step.py --quick    # smoke test
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import _env  # noqa: F401  (first: sys.path and the environment, before torch)

VARIANTS = {"fp32": ["train.amp=none"], "bf16": ["train.amp=bf16"],
            "fp32 channels_last": ["train.amp=none", "model.channels_last=true"],
            "bf16 channels_last": ["train.amp=bf16", "model.channels_last=true"],
            "bf16 + text cache (warm)": ["train.amp=bf16", "text.cache_size=100000"]}


def _step_for(overrides: list[str], run_dir: Path, text):
    import torch

    from icmlm_zoo.training.config import load_config
    from icmlm_zoo.training.distributed import DistInfo
    from icmlm_zoo.training.optim import build_optimizer, build_scheduler
    from icmlm_zoo.training.pipeline import build_pipeline
    from icmlm_zoo.training.step import TrainStep
    cfg = load_config("demo", None, ["data.num_workers=0", *overrides])
    torch.manual_seed(0)
    pipe = build_pipeline(cfg, run_dir, DistInfo(), text=text)
    opt = build_optimizer(pipe.model, cfg.optim)
    step = TrainStep(pipe.model, opt, scheduler=build_scheduler(opt, 600, cfg.optim), amp=cfg.train.amp,
                     grad_clip=cfg.optim.grad_clip)
    return cfg, pipe, step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="steps per variant and round (distinct batches)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.variants = 1, 1, "fp32,bf16"
    import tempfile

    import torch
    from common import report

    from icmlm_zoo.training.distributed import DistInfo
    from icmlm_zoo.training.text import load_text_side
    from icmlm_zoo.training.validation import run_evaluation
    prev = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    try:
        text = load_text_side("minilm")
        with tempfile.TemporaryDirectory() as tmp:
            built = {v: _step_for(VARIANTS[v], Path(tmp) / str(i), text) for i, v in enumerate(names)}
            cfg0, pipe0, _ = built[names[0]]
            loader = pipe0.train
            loader.start_epoch(0, 0)
            t0 = time.process_time()
            it = iter(loader)
            batches = [next(it) for _ in range(args.steps)]
            make_s = (time.process_time() - t0) / args.steps
            for _, _, st in built.values():            # warm-up (and fills the text cache with these batches)
                for b in batches:
                    st(b)
            times: dict[str, list[float]] = {v: [] for v in names}
            for r in range(args.rounds):
                for v in (names if r % 2 == 0 else names[::-1]):
                    st = built[v][2]
                    t0 = time.process_time()
                    for b in batches:
                        st(b)
                    times[v].append((time.process_time() - t0) / len(batches))
            cfg, pipe, _ = built[names[0]]
            t0 = time.process_time()
            cfg.eval.max_batches = 2 if args.quick else cfg.eval.max_batches
            run_evaluation(pipe.model, pipe.val.loader, cfg, DistInfo(), pipe.tokenizer)
            eval_s = time.process_time() - t0
    finally:
        torch.set_num_threads(prev)
    ref = statistics.median(times[names[0]])
    rows = [[v, " ".join(VARIANTS[v]), f"{statistics.median(times[v]):.3f}", f"{min(times[v]):.3f}",
             f"{statistics.median(times[v]) / ref:.3f}"] for v in names]
    rows.append(["making one batch (1 process)", "-", f"{make_s:.3f}", "-", f"{make_s / ref:.3f}"])
    rows.append([f"one held-out evaluation ({names[0]})", f"{cfg0.eval.max_batches} batches max", f"{eval_s:.3f}",
                 "-", f"{eval_s / ref:.3f}"])
    report(args.name or ("demo_step_quick" if args.quick else "demo_step"),
           f"The demo's step, batch 32 at 96 px, {args.threads} thread(s), CPU clock, median of {args.rounds} rounds",
           ["variant", "overrides", f"CPU s per step ({args.threads} thread)", "min", "vs first"], rows, [],
           extra={"times": times, "make_batch_s": make_s, "eval_s": eval_s, "threads": args.threads})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
