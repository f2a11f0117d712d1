"""Data sources (synthetic, COCO, Visual Genome, pairs files, WebDataset) and loader construction.

Each ``data.kind`` is one row of a table: :data:`SOURCES` opens a map-style kind's records for a split,
:data:`STREAMS` a streamed kind's :class:`~.webdataset.WebDatasetStream`.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..config_sections import CocoData, Config, DataSection, PairsData, SyntheticData, VGData, WebDatasetData
from ..memory import loader_worker_memory
from .coco import CocoCaptions
from .collate import Collator
from .dataset import ICMLMDataset, SampleBuilder
from .epoch_loader import EpochLoader, MapStyleLoader, StreamedLoader
from .loader_options import loader_kwargs
from .pairs import PairsSource
from .sampler import ResumableBatchSampler
from .synthetic import SyntheticScenes
from .visual_genome import VisualGenome
from .webdataset import WebDatasetStream

__all__ = ["build_source", "build_loader", "SampleBuilder", "Collator", "SOURCES", "STREAMS", "EpochLoader",
           "MapStyleLoader", "StreamedLoader"]


def _need(section: Any, key: str, kind: str) -> Any:
    value = getattr(section, key)
    if not value:
        raise ValueError(f"data.{kind}.{key} is not set; give it with --set data.{kind}.{key}=PATH")
    return value


def _synthetic(s: SyntheticData, split: str) -> SyntheticScenes | None:
    if split == "train":
        return SyntheticScenes(s.num_images, s.image_size, s.seed)
    return SyntheticScenes(s.val_images, s.image_size, s.val_seed) if s.val_images else None


def _coco(c: CocoData, split: str) -> CocoCaptions | None:
    if split == "train":
        return CocoCaptions(_need(c, "captions", "coco"), _need(c, "images", "coco"), c.instances)
    return CocoCaptions(c.val_captions, c.val_images or c.images, c.val_instances) if c.val_captions else None


def _visual_genome(v: VGData, split: str) -> VisualGenome | None:
    if split != "train":
        return None
    return VisualGenome(_need(v, "regions", "vg"), _need(v, "images", "vg"), v.image_data, v.min_region_frac)


def _pairs(p: PairsData, split: str) -> PairsSource | None:
    if split == "train":
        return PairsSource(_need(p, "file", "pairs"), p.image_root)
    return PairsSource(p.val_file, p.image_root) if p.val_file else None


def _webdataset(w: WebDatasetData, split: str, builder: SampleBuilder, *, rank: int, world_size: int,
                seed: int) -> WebDatasetStream | None:
    if split != "train":
        return None
    return WebDatasetStream(_need(w, "urls", "webdataset"), builder, rank=rank, world_size=world_size, seed=seed,
                            shuffle=w.shuffle, epoch_samples=w.epoch_samples, shard_shuffle=w.shard_shuffle,
                            resampled=w.resampled, image_keys=w.image_keys, caption_keys=w.caption_keys)


SOURCES: dict[str, Callable[[Any, str], Any]] = {
    "synthetic": _synthetic, "coco": _coco, "vg": _visual_genome, "pairs": _pairs}
"""Map-style ``data.kind`` -> (its ``data.<kind>`` section, split) -> record source, or None without that split."""

STREAMS: dict[str, Callable[..., WebDatasetStream | None]] = {"webdataset": _webdataset}
"""Streamed ``data.kind`` -> (its section, split, sample builder, rank, world size, seed) -> stream, or None."""


def build_source(d: DataSection, split: str = "train"):
    """The record source for ``split`` (train | val) of the ``data`` section; None when the kind has no such split
    or is streamed (see :func:`build_loader`)."""
    open_split = SOURCES.get(d.kind)
    return open_split(getattr(d, d.kind), split) if open_split else None


def build_loader(cfg: Config, split: str, builder: SampleBuilder, collator: Collator, *, rank: int = 0,
                 world_size: int = 1, source=None) -> EpochLoader | None:
    """The split's loader with its place in the epoch (:class:`MapStyleLoader` or :class:`StreamedLoader`); None
    if the split does not exist. Reads the ``data`` section, the batch size and the run's seed and device."""
    d, bs, seed = cfg.data, cfg.train.batch_size, cfg.run.seed
    device_type = "cuda" if cfg.run.device != "cpu" and torch.cuda.is_available() else "cpu"
    # persistent workers stay off: workers would keep a stale copy of the data set's epoch (augmentation seed)
    workers = cfg.eval.num_workers if split == "val" else None  # None: data.num_workers
    common = dict(collate_fn=collator, persistent_workers=False, generator=torch.Generator().manual_seed(seed),
                  worker_init_fn=loader_worker_memory, **loader_kwargs(d, device_type, workers))
    if d.kind in STREAMS:
        stream = STREAMS[d.kind](getattr(d, d.kind), split, builder, rank=rank, world_size=world_size, seed=seed)
        if stream is None:
            return None
        loader = torch.utils.data.DataLoader(stream, batch_size=bs, **common)
        return StreamedLoader(loader, stream, stream.epoch_samples // bs)
    source = source if source is not None else build_source(d, split)
    if source is None:
        return None
    ds = ICMLMDataset(source, builder)
    sampler = ResumableBatchSampler(len(ds), bs, rank=rank, world_size=world_size, seed=seed,
                                    shuffle=split == "train", drop_last=split == "train")
    return MapStyleLoader(torch.utils.data.DataLoader(ds, batch_sampler=sampler, **common), sampler, ds)
