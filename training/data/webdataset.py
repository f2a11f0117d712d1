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

Missing shards: local shard files are checked when the stream is made. None there is an error at once; some
missing are counted and named in a warning, and the stream reads the others. A shard that cannot be opened while
reading (a remote URL) becomes one failed sample (reason ``shard_unreadable``, counted by the trainer's guards); a
pass in which every shard failed is an error instead of an endless run of empty epochs.
"""
from __future__ import annotations

import logging
import re
import zlib
from pathlib import Path
from typing import Any, Iterator

import torch

from .dataset import SampleBuilder
from .records import Record

__all__ = ["WebDatasetStream", "MissingShardsError", "check_local_shards"]
# webdataset is an optional extra ([train]): imported where the stream is made, so that importing the data
# package does not need it.

log = logging.getLogger("icmlm-train")
_SCHEME = re.compile(r"^[A-Za-z][\w+.-]+:")  # http:, s3:, pipe:, ... (not a one-letter Windows drive)


class MissingShardsError(FileNotFoundError):
    """No shard of ``data.webdataset.urls`` exists."""


def _local_path(url: str) -> Path | None:
    """The file a shard URL names, or None for a remote one (a URL scheme other than ``file:``)."""
    if url.startswith("file:"):
        return Path(url[len("file:"):])
    return None if _SCHEME.match(url) else Path(url)


def check_local_shards(urls: list[str], pattern: str) -> list[str]:
    """The shards to read: every remote URL, and the local files that exist. Raises :class:`MissingShardsError`
    when none is left; otherwise logs how many local shards are missing, naming the first ones."""
    missing = [u for u in urls if (p := _local_path(u)) is not None and not p.is_file()]
    if not missing:
        return list(urls)
    gone = set(missing)
    keep = [u for u in urls if u not in gone]
    shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
    if not keep:
        raise MissingShardsError(f"data.webdataset.urls={pattern!r}: none of its {len(urls)} shard(s) exists "
                                 f"({shown}); check the folder and the {{000..099}} range")
    log.warning("data.webdataset.urls: %d of %d shard(s) missing (%s); reading the other %d", len(missing),
                len(urls), shown, len(keep))
    return keep


class WebDatasetStream(torch.utils.data.IterableDataset):
    def __init__(self, urls: str | list[str], builder: SampleBuilder, *, rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle: int = 1000, epoch_samples: int = 10000, shard_shuffle: bool | int = True,
                 resampled: bool = False, image_keys: str = "jpg;jpeg;png;webp",
                 caption_keys: str = "txt;caption") -> None:
        try:
            import webdataset as wds
        except ImportError as e:
            raise RuntimeError("data.kind=webdataset needs the webdataset package: "
                               "pip install 'icmlm-zoo[train]'") from e
        expanded = wds.shardlists.expand_source(urls)
        self.urls = check_local_shards(expanded, urls if isinstance(urls, str) else f"{len(expanded)} urls")
        self.missing_shards = len(expanded) - len(self.urls)
        self.builder = builder
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

    def _pipeline(self, wid: int, n_pass: int, failures: list[str]):
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
        stages.append(wds.tarfile_to_samples(handler=lambda exn: failures.append(repr(exn)) or True))
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
            produced, failures = False, []
            for sample in self._pipeline(wid, n_pass, failures):
                produced = True
                for err in self._shard_errors(failures):
                    yield err
                    count += 1
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
                if failures:  # every shard of this pass failed: an error, not an endless run of empty epochs
                    raise RuntimeError(f"no WebDataset shard could be read ({len(failures)} failed; first: "
                                       f"{failures[0]}); check data.webdataset.urls")
                return
            yield from self._shard_errors(failures)
            n_pass += 1

    @staticmethod
    def _shard_errors(failures: list[str]) -> Iterator[dict[str, Any]]:
        """Each shard (or tar member) that failed to read, as one failed sample the trainer counts and names."""
        while failures:
            yield {"error": "shard_unreadable", "detail": failures.pop(0)}
