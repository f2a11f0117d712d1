"""WebDataset tar shards for web-scale crawls, built from the webdataset library's own pipeline stages.

Two ways to walk the shards (as open_clip does):

* default: the shard list is shuffled every epoch (``shard_shuffle``: ``True`` = a full permutation, an
  integer = a shuffle buffer of that many shards, ``False`` = list order) with a seed from ``(seed, epoch)``
  that is the same on every rank and worker, *then* split by rank and by data-loader worker, so the shares
  stay disjoint and change from epoch to epoch;
* ``resampled=True``: every worker draws shards with replacement (``wds.ResampledShards``), seeded from
  ``(seed, epoch, rank, worker)`` — reproducible, no splitting, no notion of a pass over the data.

Either way an epoch is ``epoch_samples`` samples per process (crawls have no exact length): a worker that
runs out of shards before its share starts another pass (reshuffled, seed ``(seed, epoch, pass)``). Samples
then go through a shuffle buffer of ``shuffle`` samples seeded from ``(seed, epoch, pass, rank, worker)``.
Every stage is seeded, so an epoch's stream is a function of the seed, the epoch and the rank/worker layout:
resuming skips the already-consumed batches of the epoch by reading past them and gets the same batches.
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
                 seed: int = 0, shuffle: int = 1000, epoch_samples: int = 10000, shard_shuffle: bool | int = True,
                 resampled: bool = False, image_keys: str = "jpg;jpeg;png;webp",
                 caption_keys: str = "txt;caption") -> None:
        try:
            import webdataset  # noqa: F401
        except ImportError as e:
            raise RuntimeError("data.kind=webdataset needs the webdataset package: pip install 'icmlm-zoo[train]'") from e
        self.urls, self.builder = urls, builder
        self.rank, self.world, self.seed, self.shuffle = rank, world_size, seed, shuffle
        self.epoch_samples = int(epoch_samples)
        self.shard_shuffle, self.resampled = shard_shuffle, bool(resampled)
        self.image_keys, self.caption_keys = image_keys.split(";"), caption_keys.split(";")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _split_by_node(self, src):
        for i, item in enumerate(src):
            if i % self.world == self.rank:
                yield item

    def _pipeline(self, wid: int, n_pass: int):
        """One pass over the shards of this rank/worker: a ``wds.DataPipeline`` of url dicts -> samples."""
        import webdataset as wds
        make_seed = wds.utils.make_seed
        if self.resampled:
            # every worker draws len(urls) shards per pass with replacement; its own, reproducible seed
            n = len(wds.shardlists.expand_source(self.urls))
            stages = [wds.ResampledShards(self.urls, nshards=n, seed=make_seed(self.seed, self.epoch, n_pass),
                                          worker_seed=lambda: make_seed(self.rank, wid), deterministic=True)]
        else:
            # the same shard order on every rank and worker (seed from seed+epoch+pass), then disjoint shares
            order_seed = make_seed(self.seed, self.epoch, n_pass)
            full = self.shard_shuffle is True
            stages = [wds.SimpleShardList(self.urls, seed=order_seed if full else None)]
            if not full and self.shard_shuffle:  # an integer > 1: a shard shuffle buffer of that size
                stages.append(wds.shuffle(int(self.shard_shuffle), initial=int(self.shard_shuffle), seed=order_seed))
            stages += [self._split_by_node, wds.split_by_worker]
        stages.append(wds.tarfile_to_samples(handler=wds.warn_and_continue))
        if self.shuffle > 1:
            stages.append(wds.shuffle(self.shuffle, seed=make_seed(self.seed, self.epoch, n_pass, self.rank, wid)))
        return wds.DataPipeline(*stages)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        n_workers = info.num_workers if info else 1
        wid = info.id if info else 0
        limit = self.epoch_samples // n_workers + (1 if wid < self.epoch_samples % n_workers else 0)
        count = n_pass = 0
        while count < limit:
            produced = False
            for sample in self._pipeline(wid, n_pass):
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
            n_pass += 1
