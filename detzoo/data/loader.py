"""Data loaders: aspect-ratio grouped, seeded, rank-sharded batches of ``Sample``s.

Batches are plain lists of ``Sample`` (``collate``); the model pads them into an
``ImageBatch``.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Sampler

from detzoo.config import ConfigError
from detzoo.data.coco import CocoDataset, Sample


def collate(samples: list[Sample]) -> list[Sample]:
    """Keep a batch as the list of its samples."""
    return list(samples)


class GroupedBatchSampler(Sampler[list[int]]):
    """Batches of exactly ``batch_size`` indices that share a group id (aspect ratio).

    Each epoch walks a permutation seeded by ``seed + epoch`` (as ``DistributedSampler``)
    and emits a group's batch as soon as it has ``batch_size`` indices. Leftovers that
    cannot fill a batch at the end of the epoch are dropped, never mixed across groups;
    the permutation changes every epoch, so different images are dropped each time.
    Rank ``r`` of ``world_size`` takes batches ``r, r + world_size, ...`` of the first
    ``world_size * len(self)``, so ranks get disjoint indices and equal batch counts.
    """

    def __init__(
        self, group_ids: Sequence[int], *, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"GroupedBatchSampler: batch_size (data.images_per_gpu) must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"GroupedBatchSampler: rank {rank} is not in [0, world_size={world_size})")
        self.group_ids = list(group_ids)
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        sizes = Counter(self.group_ids)
        self._len = sum(n // batch_size for n in sizes.values()) // world_size
        if self._len == 0:
            raise ConfigError(
                f"GroupedBatchSampler: group sizes {dict(sizes)} give no batch of {batch_size} "
                f"for each of {world_size} rank(s): lower data.images_per_gpu"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        buckets: dict[int, list[int]] = {}
        batches = []
        for index in torch.randperm(len(self.group_ids), generator=generator).tolist():
            bucket = buckets.setdefault(self.group_ids[index], [])
            bucket.append(index)
            if len(bucket) == self.batch_size:
                batches.append(bucket)
                buckets[self.group_ids[index]] = []
        return iter(batches[self.rank : self.world_size * self._len : self.world_size])

    def __len__(self) -> int:
        return self._len


def build_train_loader(
    dataset: CocoDataset,
    *,
    batch_size: int,
    num_workers: int,
    seed: int,
    epoch: int = 0,
    skip_batches: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """Shuffled batches of ``batch_size`` same-aspect images for this rank, for one
    epoch, leaving out its first ``skip_batches`` (to resume mid-epoch). Sets the
    dataset's epoch, on which its random transforms depend."""
    sampler = GroupedBatchSampler(
        dataset.aspect_ratio_flags(), batch_size=batch_size, seed=seed, rank=rank, world_size=world_size
    )
    sampler.set_epoch(epoch)
    dataset.set_epoch(epoch)
    batches = list(sampler)[skip_batches:]
    # Its own generator, so that starting to iterate draws nothing from the global RNG
    # (which the model's samplers use and checkpoints restore).
    generator = torch.Generator().manual_seed(seed + epoch)
    return DataLoader(
        dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=collate, generator=generator
    )


def build_test_loader(dataset: CocoDataset, *, batch_size: int = 1, num_workers: int = 0) -> DataLoader:
    """All images in dataset order, no shuffling. Its own generator: evaluating during
    training draws nothing from the global RNG, so it does not change the training run."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
        generator=torch.Generator(),
    )
