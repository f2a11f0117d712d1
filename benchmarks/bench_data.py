"""P4: the data pipeline (JPEG decode, augment, tokenise, mask, TP targets, collate) in images/s per worker,
against the images/s the ICMLM att-fc training step consumes.

Synthetic captioned scenes are first written to disk as real JPEG files (``--jpeg-size`` px, PIL quality 90)
with a JSONL index; the pipeline is the trainer's own: ``PairsSource`` → ``SampleBuilder`` (``open_image``,
the trainer's transform at ``--size`` (``run_transforms``: timm's RandomResizedCrop, scale 0.5–1, normalised with ``icmlm_resnet50``'s cfg),
``CaptionMasker`` with the bert-base-uncased tokenizer, TP targets) → ``Collator``. "Per worker" = one process
on one torch thread, as a DataLoader worker runs. A real ``DataLoader`` with one worker process is timed too.
The step side is the att-fc step of bench_step.py (ResNet-50, bert-base-sized frozen encoder, batch
``--batch``), timed in the same run, interleaved with the pipeline passes.

Clock (default ``--clock cpu``): process CPU time, robust on a shared machine. Every stage and the step run on
one torch thread; the step's consumption on this machine is then bounded from above by ``cores`` times its
one-thread rate (perfect scaling over all cores), which is what the ratio uses: a conservative P4. The
DataLoader row is wall-clock (its work happens in another process).

    .venv/bin/python benchmarks/bench_data.py [--images 96] [--repeats 5] [--batch 16] [--size 224]
    .venv/bin/python benchmarks/bench_data.py --quick
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
from icmlm_zoo.cpu_threads import configure_cpu_threads  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def write_jpegs(out: Path, n: int, size: int, quality: int = 90) -> Path:
    """``n`` synthetic scenes as JPEG files + ``captions.jsonl`` (the pairs format)."""
    import json

    from icmlm_zoo.training.data.synthetic import SyntheticScenes
    scenes = SyntheticScenes(n, size, seed=123)
    (out / "images").mkdir(parents=True, exist_ok=True)
    with (out / "captions.jsonl").open("w") as f:
        for i in range(n):
            s = scenes.scene(i)
            rel = f"images/{i:06d}.jpg"
            s["image"].save(out / rel, quality=quality)
            f.write(json.dumps({"image": rel, "caption": s["caption"],
                                "labels": sorted({o["shape"] for o in s["objects"]})}) + "\n")
    return out / "captions.jsonl"


def main(argv=None) -> int:
    configure_cpu_threads(restart=argv is None)  # first: OpenMP's passive wait policy, threads (busy CPUs)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96, help="JPEG files written and read per pass")
    parser.add_argument("--jpeg-size", type=int, default=480, help="side of the JPEG files (COCO-like)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--precisions", default="fp32,bf16", help="precisions of the consuming step")
    parser.add_argument("--no-loader", action="store_true", help="skip the DataLoader(num_workers=1) row")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test (no goal verdict)")
    parser.add_argument("--name", default=None)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--cores", type=int, default=0, help="cores the step may use (0 = os.cpu_count())")
    args = parser.parse_args(argv)
    cores = args.cores or os.cpu_count() or 1
    if args.quick:
        args.images, args.jpeg_size, args.repeats, args.warmup = 8, 96, 1, 1
        args.batch, args.size = 2, 64
    name = args.name or ("data_quick" if args.quick else "data")

    import numpy as np
    import torch

    from bench_step import icmlm_config, make_batch, make_text_side
    from common import report
    from icmlm_zoo.training.data.collate import Collator
    from icmlm_zoo.training.data.dataset import ICMLMDataset, SampleBuilder
    from icmlm_zoo.training.data.pairs import PairsSource
    from icmlm_zoo.training.data.records import open_image
    from icmlm_zoo.training.data.synthetic import COLORS, SHAPES, SIZES
    from icmlm_zoo.training.config_sections import DataSection
    from icmlm_zoo.training.data.transforms import run_preprocessing, run_transforms
    from icmlm_zoo.training.masking import CaptionMasker
    from icmlm_zoo.training.model import build_model
    from icmlm_zoo.training.optim import build_optimizer
    from icmlm_zoo.training.step import TrainStep

    tmp = Path(tempfile.mkdtemp(prefix="icmlm-bench-data-"))
    index = write_jpegs(tmp, args.images, args.jpeg_size)
    jpeg_bytes = sum(f.stat().st_size for f in (tmp / "images").iterdir())

    text = make_text_side(args.quick)
    tags = list(SHAPES) + list(COLORS) + list(SIZES)
    tag_index = {w: i for i, w in enumerate(tags)}
    data = DataSection(image_size=args.size, scale_min=0.5)
    ttf = run_transforms(run_preprocessing("icmlm_resnet50", data), data)[0]
    masker = CaptionMasker(text.tokenizer, tags, max_length=40)
    source = PairsSource(index)
    ds = ICMLMDataset(source, SampleBuilder(ttf, masker, tag_index, tp_targets="caption", seed=0))
    collate = Collator(text.tokenizer.pad_token_id)
    n = len(ds)
    epoch = [0]

    def one_thread(fn):
        def run():
            t = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                fn()
            finally:
                torch.set_num_threads(t)
        return run

    def pipeline():
        epoch[0] += 1
        ds.set_epoch(epoch[0])
        for s in range(0, n, args.batch):
            b = collate([ds[i] for i in range(s, min(n, s + args.batch))])
            assert b["n"] > 0

    recs = [source.record(i) for i in range(n)]
    decoded = [open_image(r) for r in recs]
    caps = [r.caption for r in recs]

    def decode_only():
        for r in recs:
            open_image(r)

    def augment_only():
        for im in decoded:
            ttf(im)

    def text_only():
        rng = np.random.default_rng(epoch[0])
        for c in caps:
            masker(c, rng)

    loader_fn = None
    if not args.no_loader:
        def loader_fn():
            epoch[0] += 1
            ds.set_epoch(epoch[0])
            dl = torch.utils.data.DataLoader(ds, batch_size=args.batch, num_workers=1, collate_fn=collate,
                                             prefetch_factor=4)
            for _ in dl:
                pass

    # the consuming step: ICMLM att-fc (same as bench_step.py)
    batch = make_batch(text, args.batch, args.size, 1000 if not args.quick else 20)
    cfg = icmlm_config("coco_r50_attfc", [], args.quick)
    torch.manual_seed(0)
    model = build_model(cfg, text, 1000 if not args.quick else 20).train()
    opt = build_optimizer(model, dataclasses.replace(cfg.optim, lr=1e-4))
    precisions = [p for p in args.precisions.split(",") if p]

    def step(prec):
        from icmlm_zoo.training.text_runner import FrozenTextRunner
        runner = FrozenTextRunner(model.text, "auto", "bf16" if prec == "bf16" else "none", 0)

        train_step = TrainStep(model, opt, amp="bf16" if prec == "bf16" else "none", grad_clip=1.0)

        def fn():
            model.text_runner = runner
            train_step(batch)
        return fn

    variants = [("pipeline, 1 thread", n, one_thread(pipeline)), ("decode only", n, one_thread(decode_only)),
                ("augment only", n, one_thread(augment_only)), ("tokenize + mask only", n, one_thread(text_only))]
    if loader_fn:
        variants.append(("DataLoader, 1 worker process", n, loader_fn))
    variants += [(f"att-fc step {p}, 1 thread", args.batch, one_thread(step(p))) for p in precisions]
    times: dict[str, list[float]] = {v[0]: [] for v in variants}
    t_start = time.perf_counter()
    for rnd in range(args.warmup + args.repeats):
        for lab, _, fn in (variants if rnd % 2 == 0 else variants[::-1]):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            if rnd >= args.warmup:
                wall = lab.startswith("DataLoader") or args.clock == "wall"
                times[lab].append(time.perf_counter() - t0 if wall else time.process_time() - c0)
        if not args.quick:
            print(f"round {rnd + 1}/{args.warmup + args.repeats} ({time.perf_counter() - t_start:.0f} s)",
                  file=sys.stderr, flush=True)
    count = {lab: k for lab, k, _ in variants}
    ips = {lab: [count[lab] / t for t in ts] for lab, ts in times.items()}
    med = {lab: statistics.median(v) for lab, v in ips.items()}
    rows = [[lab, f"{statistics.median(times[lab]):.3f}", count[lab], f"{med[lab]:.1f}"] for lab, _, _ in variants]
    goals, ratios = [], {}
    for p in precisions:
        k = f"att-fc step {p}, 1 thread"
        bound = f"att-fc step {p}, {cores} cores (upper bound)"
        ips[bound] = [cores * x for x in ips[k]]
        med[bound] = statistics.median(ips[bound])
        rows.append([bound, "-", args.batch, f"{med[bound]:.1f}"])
        per_round = [a / b for a, b in zip(ips["pipeline, 1 thread"], ips[bound])]
        r = statistics.median(per_round)
        ratios[p] = {"median_of_round_ratios": r, "ratio_of_medians": med["pipeline, 1 thread"] / med[bound]}
        if not args.quick:
            goals.append({"goal": f"P4 pipeline images/s per worker / att-fc step images/s ({p}, {cores} cores)",
                          "measured": r, "target": ">= 2", "met": r >= 2})
    extra = {"images_per_s": med, "times_s": times, "ratios": ratios,
             "settings": {"images": n, "jpeg_size": args.jpeg_size, "mean_jpeg_kb": jpeg_bytes / n / 1024,
                          "batch": args.batch, "size": args.size, "repeats": args.repeats, "quick": args.quick,
                          "clock": args.clock, "cores": cores,
                          "text_encoder": text.name, "total_s": time.perf_counter() - t_start}}
    report(name, f"P4: data pipeline from {args.jpeg_size}px JPEG files vs the att-fc step "
                 f"(batch {args.batch}, {args.size} px)", ["stage", "median s", "images", "images/s"], rows, goals,
           extra=extra)
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
