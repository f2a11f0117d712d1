"""WebDataset tar shards for web-scale crawls: shards split by node (rank) and by data-loader worker.

An epoch is ``epoch_samples`` samples per process (crawls have no exact length). Resuming skips the
already-consumed batches of the epoch by reading past them.
"""
from __future__ import annotations

import zlib
from typing import Any, Iterator

import torch

from .dataset import SampleBuilder
from .records import Record

__all__ = ["WebDatasetStream"]


class WebDatasetStream(torch.utils.data.IterableDataset):
    def __init__(self, urls: str | list[str], builder: SampleBuilder, *, rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle: int = 1000, epoch_samples: int = 10000,
                 image_keys: str = "jpg;jpeg;png;webp", caption_keys: str = "txt;caption") -> None:
        try:
            import webdataset  # noqa: F401
        except ImportError as e:
            raise RuntimeError("data.kind=webdataset needs the webdataset package: pip install 'icmlm-zoo[train]'") from e
        self.urls, self.builder = urls, builder
        self.rank, self.world, self.seed, self.shuffle = rank, world_size, seed, shuffle
        self.epoch_samples = int(epoch_samples)
        self.image_keys, self.caption_keys = image_keys.split(";"), caption_keys.split(";")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _split_by_node(self, src):
        for i, item in enumerate(src):
            if i % self.world == self.rank:
                yield item

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import webdataset as wds
        info = torch.utils.data.get_worker_info()
        n_workers = info.num_workers if info else 1
        limit = self.epoch_samples // n_workers + (1 if info and info.id < self.epoch_samples % n_workers else 0)
        ds = wds.WebDataset(self.urls, nodesplitter=self._split_by_node, workersplitter=wds.split_by_worker,
                            shardshuffle=False, empty_check=False, handler=wds.warn_and_continue)
        if self.shuffle > 1:
            ds = ds.shuffle(self.shuffle, seed=self.seed + self.epoch)
        count = 0
        wid = info.id if info else 0
        while count < limit:
            produced = False
            for sample in ds:
                produced = True
                key = zlib.crc32(f"{sample.get('__key__')}|{self.epoch}|{count}".encode())
                image = next((sample[k] for k in self.image_keys if k in sample), None)
                caption = next((sample[k] for k in self.caption_keys if k in sample), None)
                rec = Record(image=image, caption=caption)
                if image is None:
                    yield {"error": "missing_image", "detail": f"{sample.get('__key__')}: no image entry"}
                else:
                    yield self.builder(rec, key * 64 + wid, self.epoch)
                count += 1
                if count >= limit:
                    return
            if not produced:
                return
