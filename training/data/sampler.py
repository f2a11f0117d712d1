"""A resumable, distributed batch sampler: a seeded permutation per epoch, sharded by rank, that can start
at any batch of the epoch (the data position saved in checkpoints)."""
from __future__ import annotations

import math
from typing import Iterator

import torch

__all__ = ["ResumableBatchSampler"]


class ResumableBatchSampler(torch.utils.data.Sampler[list[int]]):
    def __init__(self, n: int, batch_size: int, *, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = True) -> None:
        if n < 1:
            raise ValueError("the data set is empty")
        self.n, self.bs, self.rank, self.world = n, batch_size, rank, world_size
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.epoch, self.start = 0, 0
        if self.batches_per_epoch() < 1:
            raise ValueError(f"{n} samples over {world_size} process(es) do not fill one batch of {batch_size}; "
                             "lower train.batch_size or add data")

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's permutation and the batch to start from."""
        self.epoch, self.start = int(epoch), int(start_batch)

    def per_rank(self) -> int:
        return math.ceil(self.n / self.world)

    def batches_per_epoch(self) -> int:
        m = self.per_rank()
        return m // self.bs if self.drop_last else math.ceil(m / self.bs)

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            idx = torch.randperm(self.n, generator=g).tolist()
        else:
            idx = list(range(self.n))
        total = self.per_rank() * self.world
        idx += idx[: total - len(idx)]  # pad so every rank gets the same count
        return idx[self.rank::self.world]

    def __iter__(self) -> Iterator[list[int]]:
        idx = self._indices()
        for b in range(self.start, self.batches_per_epoch()):
            yield idx[b * self.bs:(b + 1) * self.bs]

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() - self.start)
