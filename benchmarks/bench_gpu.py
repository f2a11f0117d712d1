"""P5 (prepared; needs a CUDA GPU): P1/P2 on the GPU in bf16 + channels_last (optionally torch.compile), and
the whole input pipeline from JPEG files (decoded on the GPU with nvJPEG) feeding ICMLM att-fc, against the
bare ResNet-50 step's images/s.

Without CUDA it writes ``results/gpu[_quick].json`` with ``skipped: true`` and exits with status 2 and a
clear message; nothing is measured. CI never has a GPU; run it on a GPU machine:

    .venv/bin/python benchmarks/bench_gpu.py [--batch 64] [--repeats 5] [--steps 10] [--compile] [--workers 8]

Parts, all in one process (about 3-5 minutes on one recent GPU without --compile):

* P1/P2: one optimizer step per call (as bench_step.py: forward under bf16 autocast, backward, clip, fused
  AdamW) for bare ResNet-50 (channels_last), ICMLM att-fc and tfm (channels_last, frozen bert-base-sized
  encoder in bf16 inference mode, logits at masked positions) and their straightforward forms (fp32 encoder
  every step, logits at every position, NCHW); each timed sample = ``--steps`` steps between CUDA syncs;
  variants interleaved round-robin; median of ``--repeats``.
* P5 pipeline: ``--images`` synthetic scenes written as JPEG (480 px). DataLoader workers read the file bytes
  and tokenise + mask the captions (the trainer's CaptionMasker); the main process decodes the batch on the
  GPU (``torchvision.io.decode_jpeg(device="cuda")``), random-resized-crops each image on the GPU, normalises,
  and runs the att-fc step. images/s of that loop / images/s of the bare step on resident tensors >= 0.85.
  The same loop with CPU decoding (the trainer's own PIL pipeline in the workers) is timed for comparison.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from typing import Callable

import _env  # noqa: F401  (first: sys.path and the environment, before torch)
import timm
import torch
import torch.nn.functional as F
from common import RESULTS, environment, report
from gpu_pipeline import device_name, pipeline_images_per_s, timed_steps
from step_inputs import icmlm_config, make_batch, make_text_side

import icmlm_zoo  # noqa: F401
from icmlm_zoo.training.model import build_model
from icmlm_zoo.training.optim import build_optimizer, optimizer_kwargs
from icmlm_zoo.training.step import STRAIGHTFORWARD_OVERRIDES, TrainStep
from icmlm_zoo.training.text import TextSide

CL = torch.channels_last


def _parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="per-step batch (GPU-sized; CPU P1 uses 16)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed sample")
    parser.add_argument("--compile", action="store_true", help="torch.compile the trunks (adds minutes)")
    parser.add_argument("--images", type=int, default=1024, help="JPEG files for the pipeline part")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--no-pipeline", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--name", default=None)
    parser.add_argument("--dry-run-cpu", action="store_true",
                        help="run the GPU code path on the CPU (tiny sizes) to check the script itself; no verdict")
    return parser.parse_args(argv)


def _skipped(name: str) -> int:
    """Without CUDA: say so, write ``results/<name>.json`` with ``skipped: true``; exit status 2."""
    msg = ("bench_gpu.py: no CUDA device (torch.cuda.is_available() is False) - P5 was NOT measured. "
           "Run this script on a machine with a GPU.")
    print(msg, file=sys.stderr)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(
        {"title": "P5: GPU step and input pipeline", "skipped": True, "reason": msg, "goals": [], "rows": [],
         "env": environment()}, indent=2, default=str) + "\n")
    return 2


def _bare_step(args: argparse.Namespace, dev: torch.device, batch: dict) -> Callable[..., None]:
    """The bare ResNet-50 step (channels_last, bf16 autocast); called with images/classes or on ``batch``."""
    bare = timm.create_model("icmlm_resnet_tiny" if args.quick else "resnet50", num_classes=1000)
    bare = bare.to(dev, memory_format=CL).train()
    bare_params = list(bare.parameters())
    bare_opt = torch.optim.AdamW(bare_params, lr=1e-4, **optimizer_kwargs("auto", bare_params))
    bare_fwd = torch.compile(bare) if args.compile else bare
    bare_train_step = TrainStep(bare_fwd, bare_opt, amp="bf16", grad_clip=1.0, params=bare_params,
                                forward=lambda module, b: {"loss": F.cross_entropy(
                                    module(b["images"].contiguous(memory_format=CL)), b["classes"])})

    def bare_step(images=None, classes=None):
        bare_train_step({"images": batch["images"] if images is None else images,
                         "classes": batch["classes"] if classes is None else classes})
    return bare_step


def _icmlm_step(args, dev, text: TextSide, batch: dict, num_tags: int, kind: str,
                straight: bool) -> Callable[..., None]:
    """An ICMLM step of the ``coco_r50_<kind>`` preset in bf16 (its straightforward form with ``straight``)."""
    ov = list(STRAIGHTFORWARD_OVERRIDES) if straight else []
    cfg = icmlm_config("coco_r50_attfc" if kind == "attfc" else "coco_r50_tfm", ov + ["train.amp=bf16"], args.quick)
    torch.manual_seed(0)
    m = build_model(cfg, text, num_tags).to(dev).train()
    if args.compile and not straight:
        m.backbone = torch.compile(m.backbone)
    opt = build_optimizer(m, dataclasses.replace(cfg.optim, lr=1e-4))
    train_step = TrainStep(m, opt, amp="bf16", grad_clip=1.0)

    def step(b=None):
        train_step(batch if b is None else b)
    return step


def _time_variants(args: argparse.Namespace, variants: list[tuple]) -> dict[str, list[float]]:
    """Seconds per step of each variant, ``--steps`` steps between syncs, interleaved round-robin."""
    times: dict[str, list[float]] = {k: [] for k, _ in variants}
    for rnd in range(args.warmup + args.repeats):
        for lab, fn in (variants if rnd % 2 == 0 else variants[::-1]):
            dt = timed_steps(fn, args.steps if rnd >= args.warmup else 2)
            if rnd >= args.warmup:
                times[lab].append(dt)
    return times


def _step_goals(times: dict[str, list[float]]) -> list[dict]:
    """P1 (vs the bare step) and P2 (straightforward vs optimised) on the GPU."""
    def rr(a, b):
        return statistics.median(x / y for x, y in zip(times[a], times[b]))
    goals = [{"goal": "P1 att-fc / bare (GPU bf16)", "measured": rr("attfc", "bare"), "target": "<= 1.25",
              "met": rr("attfc", "bare") <= 1.25},
             {"goal": "P1 tfm / bare (GPU bf16)", "measured": rr("tfm", "bare"), "target": "<= 1.5",
              "met": rr("tfm", "bare") <= 1.5}]
    for kind in ("attfc", "tfm"):
        r = rr(f"{kind} straightforward", kind)
        goals.append({"goal": f"P2 {kind} straightforward / optimized (GPU)", "measured": r, "target": ">= 1.5",
                      "met": r >= 1.5})
    return goals


def _setup(args: argparse.Namespace) -> torch.device:
    if args.quick or args.dry_run_cpu:
        args.quick = True
        args.batch, args.size, args.repeats, args.steps, args.images, args.workers = 4, 64, 1, 2, 16, 1
    dev = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run_cpu else "cpu")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return dev


def main(argv=None) -> int:
    args = _parse_args(argv)
    name = args.name or ("gpu_quick" if (args.quick or args.dry_run_cpu) else "gpu")
    if not torch.cuda.is_available() and not args.dry_run_cpu:
        return _skipped(name)
    dev = _setup(args)
    t_start = time.perf_counter()
    text = make_text_side(args.quick)
    text.encoder.to(dev)
    num_tags = 20 if args.quick else 1000
    cpu_batch = make_batch(text, args.batch, args.size, num_tags)
    batch = {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in cpu_batch.items()}
    bare_step = _bare_step(args, dev, batch)
    variants = [("bare", bare_step)]
    for kind in ("attfc", "tfm"):
        variants.append((kind, _icmlm_step(args, dev, text, batch, num_tags, kind, False)))
        variants.append((f"{kind} straightforward", _icmlm_step(args, dev, text, batch, num_tags, kind, True)))
    times = _time_variants(args, variants)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = [[lab, f"{med[lab] * 1000:.1f}", f"{args.batch / med[lab]:.0f}"] for lab, _ in variants]
    goals = [] if args.quick else _step_goals(times)
    pipe = {}
    if not args.no_pipeline:
        pipe = pipeline_images_per_s(args, text, dev, variants[1][1], bare_step, num_tags)
        rows += [[f"pipeline: {k}", "-", f"{v:.0f}"] for k, v in pipe["images_per_s"].items()]
        if not args.quick:
            ips = pipe["images_per_s"]
            r = ips["JPEG -> GPU decode -> att-fc step"] / ips["bare step, resident tensors"]
            goals.append({"goal": "P5 JPEG pipeline + att-fc images/s / bare step images/s", "measured": r,
                          "target": ">= 0.85", "met": r >= 0.85})
    extra = {"variants": {k: {"median_s": med[k], "times_s": v} for k, v in times.items()}, "pipeline": pipe,
             "device_name": device_name(), "skipped": False,
             "settings": {**vars(args), "total_s": time.perf_counter() - t_start}}
    report(name, f"P5: GPU ({device_name()}), bf16 + channels_last, batch {args.batch}, "
                 f"{args.size} px{', torch.compile' if args.compile else ''}",
           ["step", "ms / step", "images/s"], rows, goals, extra=extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
