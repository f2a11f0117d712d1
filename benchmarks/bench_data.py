"""P4: the data pipeline (JPEG decode, augment, tokenise, mask, TP targets, collate) in images/s per worker,
against the images/s the ICMLM att-fc training step consumes.

Synthetic captioned scenes are first written to disk as real JPEG files (``--jpeg-size`` px, PIL quality 90) with a
JSONL index; the pipeline is the trainer's own: ``PairsSource`` → ``SampleBuilder`` (``open_image``, the trainer's
transform at ``--size`` (``run_transforms``: timm's RandomResizedCrop, scale 0.5–1, normalised with
``icmlm_resnet50``'s cfg), ``CaptionMasker`` with the bert-base-uncased tokenizer, TP targets) → ``Collator``. "Per
worker" = one process on one torch thread, as a DataLoader worker runs. A real ``DataLoader`` with one worker
process is timed too. The step side is the att-fc step of bench_step.py (ResNet-50, bert-base-sized frozen encoder,
batch ``--batch``), timed in the same run, interleaved with the pipeline passes.

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
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import _env  # noqa: F401  (first: sys.path and the environment, before torch)
import numpy as np
import torch
from common import report
from step_inputs import icmlm_config, make_batch, make_text_side

from icmlm_zoo.training.config_sections import DataSection
from icmlm_zoo.training.data.collate import Collator
from icmlm_zoo.training.data.dataset import ICMLMDataset, SampleBuilder
from icmlm_zoo.training.data.pairs import PairsSource
from icmlm_zoo.training.data.records import open_image
from icmlm_zoo.training.data.synthetic import COLORS, SHAPES, SIZES, SyntheticScenes
from icmlm_zoo.training.data.transforms import run_preprocessing, run_transforms
from icmlm_zoo.training.masking import CaptionMasker
from icmlm_zoo.training.model import build_model
from icmlm_zoo.training.optim import build_optimizer
from icmlm_zoo.training.step import TrainStep
from icmlm_zoo.training.text import TextSide
from icmlm_zoo.training.text_runner import FrozenTextRunner


def write_jpegs(out: Path, n: int, size: int, quality: int = 90) -> Path:
    """``n`` synthetic scenes as JPEG files + ``captions.jsonl`` (the pairs format)."""
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


def _parse_args(argv) -> argparse.Namespace:
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
    if args.quick:
        args.images, args.jpeg_size, args.repeats, args.warmup = 8, 96, 1, 1
        args.batch, args.size = 2, 64
    return args


def _one_thread(fn: Callable[[], None]) -> Callable[[], None]:
    def run():
        t = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            fn()
        finally:
            torch.set_num_threads(t)
    return run


class _Stages:
    """The trainer's pipeline over the JPEG files, whole and stage by stage (decode, augment, tokenise + mask)."""

    def __init__(self, index: Path, text: TextSide, size: int, batch: int) -> None:
        tags = list(SHAPES) + list(COLORS) + list(SIZES)
        data = DataSection(image_size=size, scale_min=0.5)
        self.transform = run_transforms(run_preprocessing("icmlm_resnet50", data), data)[0]
        self.masker = CaptionMasker(text.tokenizer, tags, max_length=40)
        source = PairsSource(index)
        self.ds = ICMLMDataset(source, SampleBuilder(self.transform, self.masker, {w: i for i, w in enumerate(tags)},
                                                     tp_targets="caption", seed=0))
        self.collate = Collator(text.tokenizer.pad_token_id)
        self.n, self.batch, self.epoch = len(self.ds), batch, 0
        self.recs = [source.record(i) for i in range(self.n)]
        self.decoded = [open_image(r) for r in self.recs]

    def pipeline(self) -> None:
        self.epoch += 1
        self.ds.set_epoch(self.epoch)
        for s in range(0, self.n, self.batch):
            b = self.collate([self.ds[i] for i in range(s, min(self.n, s + self.batch))])
            assert b["n"] > 0

    def decode_only(self) -> None:
        for r in self.recs:
            open_image(r)

    def augment_only(self) -> None:
        for im in self.decoded:
            self.transform(im)

    def text_only(self) -> None:
        rng = np.random.default_rng(self.epoch)
        for r in self.recs:
            self.masker(r.caption, rng)

    def loader(self) -> None:
        self.epoch += 1
        self.ds.set_epoch(self.epoch)
        dl = torch.utils.data.DataLoader(self.ds, batch_size=self.batch, num_workers=1, collate_fn=self.collate,
                                         prefetch_factor=4)
        for _ in dl:
            pass


def _attfc_steps(args: argparse.Namespace, text: TextSide, precisions: list[str]) -> list[tuple]:
    """The consuming step, ICMLM att-fc (same as bench_step.py): a (label, images, fn) row per precision."""
    batch = make_batch(text, args.batch, args.size, 1000 if not args.quick else 20)
    cfg = icmlm_config("coco_r50_attfc", [], args.quick)
    torch.manual_seed(0)
    model = build_model(cfg, text, 1000 if not args.quick else 20).train()
    opt = build_optimizer(model, dataclasses.replace(cfg.optim, lr=1e-4))

    def step(prec):
        runner = FrozenTextRunner(model.text, "auto", "bf16" if prec == "bf16" else "none", 0)
        train_step = TrainStep(model, opt, amp="bf16" if prec == "bf16" else "none", grad_clip=1.0)

        def fn():
            model.text_runner = runner
            train_step(batch)
        return fn
    return [(f"att-fc step {p}, 1 thread", args.batch, _one_thread(step(p))) for p in precisions]


def _time_rounds(args: argparse.Namespace, variants: list[tuple]) -> dict[str, list[float]]:
    """Round-robin timing (order reversed every other round); the DataLoader row on the wall clock."""
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
    return times


def _results(args, variants, times, precisions, cores) -> tuple[list, list, dict, dict]:
    """Table rows, P4 goals, ratios and median images/s (with each step's all-cores upper bound)."""
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
    return rows, goals, ratios, med


def main(argv=None) -> int:
    args = _parse_args(argv)
    cores = args.cores or os.cpu_count() or 1
    name = args.name or ("data_quick" if args.quick else "data")
    tmp = Path(tempfile.mkdtemp(prefix="icmlm-bench-data-"))
    index = write_jpegs(tmp, args.images, args.jpeg_size)
    jpeg_bytes = sum(f.stat().st_size for f in (tmp / "images").iterdir())
    text = make_text_side(args.quick)
    st = _Stages(index, text, args.size, args.batch)
    n = st.n
    precisions = [p for p in args.precisions.split(",") if p]
    variants = [("pipeline, 1 thread", n, _one_thread(st.pipeline)), ("decode only", n, _one_thread(st.decode_only)),
                ("augment only", n, _one_thread(st.augment_only)),
                ("tokenize + mask only", n, _one_thread(st.text_only))]
    if not args.no_loader:
        variants.append(("DataLoader, 1 worker process", n, st.loader))
    variants += _attfc_steps(args, text, precisions)
    t_start = time.perf_counter()
    times = _time_rounds(args, variants)
    rows, goals, ratios, med = _results(args, variants, times, precisions, cores)
    extra = {"images_per_s": med, "times_s": times, "ratios": ratios,
             "settings": {"images": n, "jpeg_size": args.jpeg_size, "mean_jpeg_kb": jpeg_bytes / n / 1024,
                          "batch": args.batch, "size": args.size, "repeats": args.repeats, "quick": args.quick,
                          "clock": args.clock, "cores": cores,
                          "text_encoder": text.name, "total_s": time.perf_counter() - t_start}}
    report(name, f"P4: data pipeline from {args.jpeg_size}px JPEG files vs the att-fc step "
                 f"(batch {args.batch}, {args.size} px)", ["stage", "median s", "images", "images/s"], rows, goals,
           extra=extra)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
