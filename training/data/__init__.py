"""Data sources (synthetic, COCO, Visual Genome, pairs files, WebDataset) and loader construction."""
from __future__ import annotations

from typing import Any

import torch

from ..config_sections import Config, DataSection
from .collate import Collator
from .dataset import ICMLMDataset, SampleBuilder
from .loader_options import loader_kwargs
from .sampler import ResumableBatchSampler

__all__ = ["build_source", "build_loader", "SampleBuilder", "Collator"]


def _need(section: Any, key: str, where: str) -> Any:
    value = getattr(section, key)
    if not value:
        raise ValueError(f"data.{where}.{key} is not set; give it with --set data.{where}.{key}=PATH")
    return value


def build_source(d: DataSection, split: str = "train"):
    """The record source for ``split`` (train | val) of the ``data`` section, or None when it has no such split."""
    kind = d.kind
    if kind == "synthetic":
        from .synthetic import SyntheticScenes
        s = d.synthetic
        if split == "train":
            return SyntheticScenes(s.num_images, s.image_size, s.seed)
        return SyntheticScenes(s.val_images, s.image_size, s.val_seed) if s.val_images else None
    if kind == "coco":
        from .coco import CocoCaptions
        c = d.coco
        if split == "train":
            return CocoCaptions(_need(c, "captions", "coco"), _need(c, "images", "coco"), c.instances)
        if not c.val_captions:
            return None
        return CocoCaptions(c.val_captions, c.val_images or c.images, c.val_instances)
    if kind == "vg":
        from .visual_genome import VisualGenome
        v = d.vg
        if split != "train":
            return None
        return VisualGenome(_need(v, "regions", "vg"), _need(v, "images", "vg"), v.image_data, v.min_region_frac)
    if kind == "pairs":
        from .pairs import PairsSource
        p = d.pairs
        if split == "train":
            return PairsSource(_need(p, "file", "pairs"), p.image_root)
        return PairsSource(p.val_file, p.image_root) if p.val_file else None
    if kind == "webdataset":
        return None  # streamed, see build_loader
    raise ValueError(f"unknown data.kind {kind!r}")


def build_loader(cfg: Config, split: str, builder: SampleBuilder, collator: Collator, *, rank: int = 0,
                 world_size: int = 1, source=None) -> tuple[torch.utils.data.DataLoader, Any] | None:
    """A DataLoader plus the object that takes ``set_epoch`` (a :class:`ResumableBatchSampler` for map-style
    sources, the dataset for WebDataset); None if the split does not exist. Reads the ``data`` section, the
    batch size and the run's seed and device."""
    d, bs, seed = cfg.data, cfg.train.batch_size, cfg.run.seed
    device_type = "cuda" if cfg.run.device != "cpu" and torch.cuda.is_available() else "cpu"
    # persistent workers stay off: workers would keep a stale copy of the data set's epoch (augmentation seed)
    common = dict(num_workers=d.num_workers, collate_fn=collator, persistent_workers=False,
                  generator=torch.Generator().manual_seed(seed), **loader_kwargs(d, device_type))
    if d.kind == "webdataset":
        if split != "train":
            return None
        from .webdataset import WebDatasetStream
        w = d.webdataset
        ds = WebDatasetStream(_need(w, "urls", "webdataset"), builder, rank=rank, world_size=world_size, seed=seed,
                              shuffle=w.shuffle, epoch_samples=w.epoch_samples, shard_shuffle=w.shard_shuffle,
                              resampled=w.resampled, image_keys=w.image_keys, caption_keys=w.caption_keys)
        ds.batches_per_epoch = lambda: w.epoch_samples // bs  # type: ignore[attr-defined]
        return torch.utils.data.DataLoader(ds, batch_size=bs, **common), ds
    source = source if source is not None else build_source(d, split)
    if source is None:
        return None
    ds = ICMLMDataset(source, builder)
    sampler = ResumableBatchSampler(len(ds), bs, rank=rank, world_size=world_size, seed=seed,
                                    shuffle=split == "train", drop_last=split == "train")
    sampler.dataset = ds  # type: ignore[attr-defined]
    return torch.utils.data.DataLoader(ds, batch_sampler=sampler, **common), sampler
