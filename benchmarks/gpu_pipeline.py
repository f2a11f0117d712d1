"""The P5 input pipeline of bench_gpu.py: JPEG files read by DataLoader workers, decoded on the GPU (or on the
CPU by the trainer's own pipeline), feeding the att-fc step; images/s against the bare step."""
from __future__ import annotations

import functools
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from bench_data import write_jpegs
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

import icmlm_zoo  # noqa: F401
from icmlm_zoo.training.config_sections import DataSection
from icmlm_zoo.training.data.collate import Collator
from icmlm_zoo.training.data.dataset import ICMLMDataset, SampleBuilder
from icmlm_zoo.training.data.pairs import PairsSource
from icmlm_zoo.training.data.synthetic import COLORS, SHAPES, SIZES
from icmlm_zoo.training.data.transforms import run_preprocessing, run_transforms
from icmlm_zoo.training.masking import CaptionMasker
from icmlm_zoo.training.text import TextSide

CL = torch.channels_last


class _JpegCaptions:
    """Map-style data set: raw JPEG bytes + tokenised, masked caption + TP targets (decoding happens later)."""

    def __init__(self, source, masker, tag_index):
        self.source, self.masker, self.tag_index = source, masker, tag_index

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        rec = self.source.record(i)
        m = self.masker(rec.caption, np.random.default_rng([0, i]))
        tp = torch.zeros(len(self.tag_index))
        for w in rec.caption.lower().split():
            j = self.tag_index.get(w)
            if j is not None:
                tp[j] = 1
        return {"jpeg": read_file(str(rec.image_path)), "input_ids": m.input_ids, "labels": m.labels, "tp": tp}


def _collate_jpeg(samples, pad_id=0):
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
    return {"jpeg_bytes": torch.cat([s["jpeg"] for s in samples]), "jpeg_sizes": sizes, "input_ids": ids,
            "labels": labels, "attention_mask": att, "tp": torch.stack([s["tp"] for s in samples])}


def _loaders(args, text: TextSide, dev: torch.device, num_tags: int, index: Path):
    """The same JPEG files twice: raw bytes for GPU decoding, and through the trainer's CPU pipeline in the
    workers; with the GPU side's mean and std (0-255 scale)."""
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
    return gpu_dl, cpu_dl, mean, std


def _gpu_batches(gpu_dl, dev: torch.device, mean, std, size: int) -> Iterator[dict]:
    """Decode each batch's JPEGs on the GPU (nvJPEG), random-resized-crop and normalise there."""
    for b in gpu_dl:
        jpegs = list(torch.split(b["jpeg_bytes"], b["jpeg_sizes"].tolist()))
        imgs = decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=dev)
        crops = []
        for im in imgs:
            i, j, h, w = RandomResizedCrop.get_params(im, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3))
            crops.append(TF.resized_crop(im, i, j, h, w, [size, size], antialias=True))
        x = ((torch.stack(crops).float() - mean) / std).contiguous(memory_format=torch.channels_last)
        yield {"images": x, **{k: b[k].to(dev, non_blocking=True) for k in ("input_ids", "labels",
                                                                              "attention_mask", "tp")}}


def _cpu_batches(cpu_dl, dev: torch.device) -> Iterator[dict]:
    for b in cpu_dl:
        yield {k: b[k].to(dev, non_blocking=True) for k in ("images", "input_ids", "labels", "attention_mask", "tp")}


def _images_per_s(batches: Iterator[dict], step, max_batches: int) -> float:
    """images/s of ``step`` fed by ``batches`` (after one warm-up batch: workers started, first decode)."""
    n = 0
    step(next(batches))
    sync()
    t0 = time.perf_counter()
    for k, b in enumerate(batches):
        if k >= max_batches:
            break
        step(b)
        n += b["images"].shape[0]
    sync()
    return n / (time.perf_counter() - t0)


def pipeline_images_per_s(args, text, dev, attfc_step, bare_step, num_tags) -> dict:
    """P5: images/s of the att-fc step fed from JPEG files (GPU and CPU decoding), bracketed by the bare step."""
    tmp = Path(tempfile.mkdtemp(prefix="icmlm-bench-gpu-"))
    index = write_jpegs(tmp, args.images, 96 if args.quick else 480)
    gpu_dl, cpu_dl, mean, std = _loaders(args, text, dev, num_tags, index)
    nb = max(1, args.images // args.batch - 2)
    res = {}
    res["bare step, resident tensors"] = args.batch / statistics.median(
        timed_steps(bare_step, args.steps) for _ in range(args.repeats))
    res["JPEG -> GPU decode -> att-fc step"] = _images_per_s(_gpu_batches(gpu_dl, dev, mean, std, args.size),
                                                             attfc_step, nb)
    res["JPEG -> CPU decode (workers) -> att-fc step"] = _images_per_s(_cpu_batches(cpu_dl, dev), attfc_step, nb)
    res["bare step, resident tensors (again)"] = args.batch / statistics.median(
        timed_steps(bare_step, args.steps) for _ in range(args.repeats))
    # bracketed; the faster of the two bare measurements is the reference (the stricter ratio)
    res["bare step, resident tensors"] = max(res["bare step, resident tensors"],
                                             res.pop("bare step, resident tensors (again)"))
    shutil.rmtree(tmp, ignore_errors=True)
    return {"images_per_s": res, "batches": nb, "workers": args.workers}


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def device_name():
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU dry run"


def timed_steps(fn, steps):
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - t0) / steps
