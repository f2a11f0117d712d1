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
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
from icmlm_zoo.cpu_threads import configure_cpu_threads  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv=None) -> int:
    configure_cpu_threads(restart=argv is None)  # first: OpenMP's passive wait policy, threads (busy CPUs)
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
    args = parser.parse_args(argv)
    name = args.name or ("gpu_quick" if (args.quick or args.dry_run_cpu) else "gpu")

    import torch

    from common import RESULTS, environment, report
    if not torch.cuda.is_available() and not args.dry_run_cpu:
        msg = ("bench_gpu.py: no CUDA device (torch.cuda.is_available() is False) - P5 was NOT measured. "
               "Run this script on a machine with a GPU.")
        print(msg, file=sys.stderr)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{name}.json").write_text(json.dumps(
            {"title": "P5: GPU step and input pipeline", "skipped": True, "reason": msg, "goals": [], "rows": [],
             "env": environment()}, indent=2, default=str) + "\n")
        return 2

    if args.quick or args.dry_run_cpu:
        args.quick = True
        args.batch, args.size, args.repeats, args.steps, args.images, args.workers = 4, 64, 1, 2, 16, 1
    import timm
    import torch.nn.functional as F

    import icmlm_zoo  # noqa: F401
    from bench_step import icmlm_config, make_batch, make_text_side
    from icmlm_zoo.training.model import build_model
    from icmlm_zoo.training.optim import build_optimizer
    from icmlm_zoo.training.optim import optimizer_kwargs
    from icmlm_zoo.training.step import STRAIGHTFORWARD_OVERRIDES, TrainStep

    dev = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run_cpu else "cpu")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    cl = torch.channels_last
    t_start = time.perf_counter()
    text = make_text_side(args.quick)
    text.encoder.to(dev)
    num_tags = 20 if args.quick else 1000
    cpu_batch = make_batch(text, args.batch, args.size, num_tags)
    batch = {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in cpu_batch.items()}

    bare = timm.create_model("icmlm_resnet_tiny" if args.quick else "resnet50", num_classes=1000)
    bare = bare.to(dev, memory_format=cl).train()
    bare_params = list(bare.parameters())
    bare_opt = torch.optim.AdamW(bare_params, lr=1e-4, **optimizer_kwargs("auto", bare_params))
    bare_fwd = torch.compile(bare) if args.compile else bare

    bare_train_step = TrainStep(bare_fwd, bare_opt, amp="bf16", grad_clip=1.0, params=bare_params,
                                forward=lambda module, b: {"loss": F.cross_entropy(
                                    module(b["images"].contiguous(memory_format=cl)), b["classes"])})

    def bare_step(images=None, classes=None):
        bare_train_step({"images": batch["images"] if images is None else images,
                         "classes": batch["classes"] if classes is None else classes})

    def make_icmlm(kind: str, straight: bool):
        ov = list(STRAIGHTFORWARD_OVERRIDES) if straight else []
        cfg = icmlm_config("coco_r50_attfc" if kind == "attfc" else "coco_r50_tfm", ov + ["train.amp=bf16"],
                           args.quick)
        torch.manual_seed(0)
        m = build_model(cfg, text, num_tags).to(dev).train()
        if args.compile and not straight:
            m.backbone = torch.compile(m.backbone)
        opt = build_optimizer(m, dataclasses.replace(cfg.optim, lr=1e-4))
        train_step = TrainStep(m, opt, amp="bf16", grad_clip=1.0)

        def step(b=None):
            train_step(batch if b is None else b)
        return step

    variants = [("bare", bare_step)]
    for kind in ("attfc", "tfm"):
        variants.append((kind, make_icmlm(kind, False)))
        variants.append((f"{kind} straightforward", make_icmlm(kind, True)))

    def timed(fn, steps):
        return _timed_steps(fn, steps)

    times: dict[str, list[float]] = {k: [] for k, _ in variants}
    for rnd in range(args.warmup + args.repeats):
        for lab, fn in (variants if rnd % 2 == 0 else variants[::-1]):
            dt = timed(fn, args.steps if rnd >= args.warmup else 2)
            if rnd >= args.warmup:
                times[lab].append(dt)
    med = {k: statistics.median(v) for k, v in times.items()}

    def rr(a, b):
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    rows = [[lab, f"{med[lab] * 1000:.1f}", f"{args.batch / med[lab]:.0f}"] for lab, _ in variants]
    goals = []
    if not args.quick:
        goals += [{"goal": "P1 att-fc / bare (GPU bf16)", "measured": rr("attfc", "bare"), "target": "<= 1.25",
                   "met": rr("attfc", "bare") <= 1.25},
                  {"goal": "P1 tfm / bare (GPU bf16)", "measured": rr("tfm", "bare"), "target": "<= 1.5",
                   "met": rr("tfm", "bare") <= 1.5}]
        for kind in ("attfc", "tfm"):
            r = rr(f"{kind} straightforward", kind)
            goals.append({"goal": f"P2 {kind} straightforward / optimized (GPU)", "measured": r, "target": ">= 1.5",
                          "met": r >= 1.5})

    pipe = {}
    if not args.no_pipeline:
        pipe = _pipeline(args, text, dev, variants[1][1], bare_step, num_tags)
        rows += [[f"pipeline: {k}", "-", f"{v:.0f}"] for k, v in pipe["images_per_s"].items()]
        if not args.quick:
            r = pipe["images_per_s"]["JPEG -> GPU decode -> att-fc step"] / pipe["images_per_s"]["bare step, resident tensors"]
            goals.append({"goal": "P5 JPEG pipeline + att-fc images/s / bare step images/s", "measured": r,
                          "target": ">= 0.85", "met": r >= 0.85})
    extra = {"variants": {k: {"median_s": med[k], "times_s": v} for k, v in times.items()}, "pipeline": pipe,
             "device_name": _device_name(), "skipped": False,
             "settings": {**vars(args), "total_s": time.perf_counter() - t_start}}
    report(name, f"P5: GPU ({_device_name()}), bf16 + channels_last, batch {args.batch}, "
                 f"{args.size} px{', torch.compile' if args.compile else ''}",
           ["step", "ms / step", "images/s"], rows, goals, extra=extra)
    return 0


class _JpegCaptions:
    """Map-style data set: raw JPEG bytes + tokenised, masked caption + TP targets (decoding happens later)."""

    def __init__(self, source, masker, tag_index):
        self.source, self.masker, self.tag_index = source, masker, tag_index

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        import numpy as np
        import torch
        from torchvision.io import read_file
        rec = self.source.record(i)
        m = self.masker(rec.caption, np.random.default_rng([0, i]))
        tp = torch.zeros(len(self.tag_index))
        for w in rec.caption.lower().split():
            j = self.tag_index.get(w)
            if j is not None:
                tp[j] = 1
        return {"jpeg": read_file(str(rec.image_path)), "input_ids": m.input_ids, "labels": m.labels, "tp": tp}


def _collate_jpeg(samples, pad_id=0):
    import torch
    L = max(len(s["input_ids"]) for s in samples)
    ids = torch.full((len(samples), L), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), L), -100, dtype=torch.long)
    att = torch.zeros((len(samples), L), dtype=torch.long)
    for r, s in enumerate(samples):
        n = len(s["input_ids"])
        ids[r, :n], labels[r, :n], att[r, :n] = torch.tensor(s["input_ids"]), torch.tensor(s["labels"]), 1
    # one flat byte tensor + offsets: a list of many small tensors crossing from a worker can exhaust
    # file descriptors ("Bad file descriptor" in DupFd)
    sizes = torch.tensor([len(s["jpeg"]) for s in samples])
    return {"jpeg_bytes": torch.cat([s["jpeg"] for s in samples]), "jpeg_sizes": sizes, "input_ids": ids, "labels": labels, "attention_mask": att,
            "tp": torch.stack([s["tp"] for s in samples])}


def _pipeline(args, text, dev, attfc_step, bare_step, num_tags) -> dict:
    import functools

    import torch
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms import RandomResizedCrop
    from torchvision.transforms.v2 import functional as TF

    from bench_data import write_jpegs
    from icmlm_zoo.training.data.collate import Collator
    from icmlm_zoo.training.data.dataset import ICMLMDataset, SampleBuilder
    from icmlm_zoo.training.data.pairs import PairsSource
    from icmlm_zoo.training.data.synthetic import COLORS, SHAPES, SIZES
    from icmlm_zoo.training.config_sections import DataSection
    from icmlm_zoo.training.data.transforms import run_preprocessing, run_transforms
    from icmlm_zoo.training.masking import CaptionMasker

    tmp = Path(tempfile.mkdtemp(prefix="icmlm-bench-gpu-"))
    index = write_jpegs(tmp, args.images, 96 if args.quick else 480)
    tags = list(SHAPES) + list(COLORS) + list(SIZES)
    tag_index = {w: i for i, w in enumerate(tags + [f"tag{i}" for i in range(num_tags - len(tags))])}
    masker = CaptionMasker(text.tokenizer, tags, max_length=40)
    source = PairsSource(index)
    data = DataSection(image_size=args.size, scale_min=0.5)
    norm = run_preprocessing("icmlm_resnet50", data)
    mean = torch.tensor(norm["mean"], device=dev).view(1, 3, 1, 1) * 255
    std = torch.tensor(norm["std"], device=dev).view(1, 3, 1, 1) * 255
    pad = text.tokenizer.pad_token_id
    loader_kw = dict(batch_size=args.batch, num_workers=args.workers, pin_memory=dev.type == "cuda", drop_last=True,
                     persistent_workers=False, prefetch_factor=4 if args.workers else None, shuffle=True)
    gpu_dl = torch.utils.data.DataLoader(_JpegCaptions(source, masker, tag_index),
                                         collate_fn=functools.partial(_collate_jpeg, pad_id=pad), **loader_kw)
    ttf = run_transforms(norm, data)[0]
    cpu_ds = ICMLMDataset(source, SampleBuilder(ttf, masker, tag_index, seed=0))
    cpu_dl = torch.utils.data.DataLoader(cpu_ds, collate_fn=Collator(pad), **loader_kw)

    def gpu_batches():
        for b in gpu_dl:
            jpegs = list(torch.split(b["jpeg_bytes"], b["jpeg_sizes"].tolist()))
            imgs = decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=dev)
            crops = []
            for im in imgs:
                i, j, h, w = RandomResizedCrop.get_params(im, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3))
                crops.append(TF.resized_crop(im, i, j, h, w, [args.size, args.size], antialias=True))
            x = ((torch.stack(crops).float() - mean) / std).contiguous(memory_format=torch.channels_last)
            yield {"images": x, **{k: b[k].to(dev, non_blocking=True) for k in ("input_ids", "labels",
                                                                                  "attention_mask", "tp")}}

    def cpu_batches():
        for b in cpu_dl:
            yield {k: b[k].to(dev, non_blocking=True) for k in ("images", "input_ids", "labels", "attention_mask", "tp")}

    def run(gen, step, max_batches):
        n = 0
        it = gen()
        step(next(it))  # warm-up (workers started, first decode)
        _sync()
        t0 = time.perf_counter()
        for k, b in enumerate(it):
            if k >= max_batches:
                break
            step(b)
            n += b["images"].shape[0]
        _sync()
        return n / (time.perf_counter() - t0)

    nb = max(1, args.images // args.batch - 2)
    res = {}
    res["bare step, resident tensors"] = args.batch / statistics.median(
        _timed_steps(bare_step, args.steps) for _ in range(args.repeats))
    res["JPEG -> GPU decode -> att-fc step"] = run(gpu_batches, attfc_step, nb)
    res["JPEG -> CPU decode (workers) -> att-fc step"] = run(cpu_batches, attfc_step, nb)
    res["bare step, resident tensors (again)"] = args.batch / statistics.median(
        _timed_steps(bare_step, args.steps) for _ in range(args.repeats))
    # bracketed; the faster of the two bare measurements is the reference (the stricter ratio)
    res["bare step, resident tensors"] = max(res["bare step, resident tensors"],
                                             res.pop("bare step, resident tensors (again)"))
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)
    return {"images_per_s": res, "batches": nb, "workers": args.workers}


def _sync():
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _device_name():
    import torch
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU dry run"


def _timed_steps(fn, steps):
    _sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync()
    return (time.perf_counter() - t0) / steps


if __name__ == "__main__":
    sys.exit(main())
