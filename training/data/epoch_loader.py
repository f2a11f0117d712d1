"""A split's DataLoader together with its place in the epoch (the data position a checkpoint saves).

Two kinds: :class:`MapStyleLoader` (a :class:`~.sampler.ResumableBatchSampler` starts at any batch of an epoch)
and :class:`StreamedLoader` (a stream is read from the start of its epoch; the batches already consumed are read
past). Both have :meth:`start_epoch`, which positions the loader and returns how many batches to read past, and
``batches_per_epoch``; iterating one iterates its DataLoader.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Protocol

import torch

from .dataset import ICMLMDataset
from .sampler import ResumableBatchSampler
from .webdataset import WebDatasetStream

__all__ = ["EpochLoader", "MapStyleLoader", "StreamedLoader"]


class EpochLoader(Protocol):
    """What the trainer needs of a split's loader."""
    loader: torch.utils.data.DataLoader

    @property
    def batches_per_epoch(self) -> int: ...

    def start_epoch(self, epoch: int, batch: int = 0) -> int: ...

    def __iter__(self) -> Iterator[dict[str, Any]]: ...


@dataclass
class MapStyleLoader:
    """A map-style data set's loader: its sampler starts an epoch at any batch."""
    loader: torch.utils.data.DataLoader
    sampler: ResumableBatchSampler
    dataset: ICMLMDataset

    @property
    def batches_per_epoch(self) -> int:
        return self.sampler.batches_per_epoch()

    def start_epoch(self, epoch: int, batch: int = 0) -> int:
        """Iterate ``epoch`` from its batch ``batch`` (the permutation and the augmentation seed of that epoch);
        nothing to read past: returns 0."""
        self.sampler.set_epoch(epoch, batch)
        self.dataset.set_epoch(epoch)
        return 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.loader)


@dataclass
class StreamedLoader:
    """A stream's loader (WebDataset shards): an epoch of ``batches_per_epoch`` batches, read from its start."""
    loader: torch.utils.data.DataLoader
    stream: WebDatasetStream
    batches_per_epoch: int

    def start_epoch(self, epoch: int, batch: int = 0) -> int:
        """Iterate ``epoch`` from its start; returns ``batch``, the batches the caller reads past to reach its
        position (every stage is seeded, so they are the batches read before)."""
        self.stream.set_epoch(epoch)
        return batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.loader)
