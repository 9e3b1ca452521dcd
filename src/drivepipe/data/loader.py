"""DataLoader construction: deterministic order per (seed, epoch), resumable mid-epoch, DDP-aware.

Order of one epoch is a pure function of (train.seed, epoch, rank, world_size): the batch sampler shuffles the
indices (DistributedSampler when world_size > 1), optionally groups samples of similar point count (sorting inside
shuffled buckets, then shuffling the batches), and can skip the first k batches so that a resumed run sees exactly
the batches an uninterrupted run would have seen. Augmentation randomness is derived from (seed, epoch, index),
never from worker state, so it is independent of the number of workers and of resumption.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from drivepipe.config import Config
from drivepipe.sample import collate

BUCKET_BATCHES = 8  # batches per size-sorting bucket when train.group_by_size is on


class SeededDataset(Dataset):
    """Wraps a dataset whose items are fetched by `(epoch, index)`; applies `transform(sample, rng)` with an rng
    seeded from (seed, epoch, index)."""

    def __init__(self, dataset: Any, transform: Any = None, seed: int = 0) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        sample = self.dataset[index]
        if self.transform is None:
            return sample
        rng = np.random.default_rng([self.seed, epoch, index])
        return self.transform(sample, rng)


class EpochBatchSampler:
    """Yields lists of `(epoch, index)` keys; call `set_epoch(epoch, skip_batches)` before each `iter(loader)`."""

    def __init__(self, dataset: Any, batch_size: int, *, shuffle: bool, seed: int, rank: int = 0,
                 world_size: int = 1, drop_last: bool = False, group_by_size: bool = False) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.group_by_size = group_by_size and hasattr(dataset, "num_points")
        self.dist = (DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed,
                                        drop_last=drop_last) if world_size > 1 else None)
        self.epoch = 0
        self.skip = 0
        self._sizes: list[int] | None = None

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Select the epoch's order and how many of its first batches to skip (resume)."""
        self.epoch, self.skip = epoch, skip_batches
        if self.dist is not None:
            self.dist.set_epoch(epoch)

    def _indices(self) -> list[int]:
        if self.dist is not None:
            return list(self.dist)
        if not self.shuffle:
            return list(range(len(self.dataset)))
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(len(self.dataset), generator=g).tolist()

    def batches(self) -> list[list[int]]:
        """All batches of the current epoch (indices only), before skipping."""
        idx = self._indices()
        if self.group_by_size:
            if self._sizes is None:
                self._sizes = [int(self.dataset.num_points(i)) for i in range(len(self.dataset))]
            bucket = self.batch_size * BUCKET_BATCHES
            idx = [i for s in range(0, len(idx), bucket)
                   for i in sorted(idx[s:s + bucket], key=lambda k: self._sizes[k])]
        out = [idx[s:s + self.batch_size] for s in range(0, len(idx), self.batch_size)]
        if out and self.drop_last and len(out[-1]) < self.batch_size:
            out.pop()
        if self.group_by_size and self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch + 7)
            out = [out[k] for k in torch.randperm(len(out), generator=g).tolist()]
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.batches()[self.skip:]:
            yield [(self.epoch, i) for i in batch]

    def __len__(self) -> int:
        return max(0, len(self.batches()) - self.skip)

    def num_batches(self) -> int:
        """Batches in a full epoch (ignores skipping)."""
        return len(self.batches())


def worker_init_fn(worker_id: int) -> None:
    """Derive the worker's numpy / random seeds from torch's per-worker seed (base_seed + worker_id)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_loader(dataset: Any, cfg: Config, train: bool, rank: int = 0, world_size: int = 1,
                 epoch_seed: int | None = None, transform: Any = None) -> DataLoader:
    """A DataLoader over `dataset` whose batch sampler is an `EpochBatchSampler` (`loader.batch_sampler`).

    Args:
        dataset: map-style dataset of Sample dicts; `num_points(i)` enables grouping by size.
        cfg: full config (train.* knobs: batch size, workers, pinning, prefetch, grouping, seed).
        train: shuffle, drop the last incomplete batch and apply `transform`; validation is never augmented.
        rank, world_size: this process's DDP rank and the number of processes.
        epoch_seed: seed of the order and of augmentation (default train.seed).
        transform: `(sample, rng) -> sample`, used only when `train` (e.g. `data.augment.Augmenter`).
    Before iterating call `loader.batch_sampler.set_epoch(epoch, skip_batches)`.
    """
    t = cfg.train
    seed = t.seed if epoch_seed is None else epoch_seed
    sampler = EpochBatchSampler(dataset, t.batch_size, shuffle=train, seed=seed, rank=rank, world_size=world_size,
                                drop_last=train, group_by_size=train and t.group_by_size)
    workers = t.workers
    extra: dict[str, Any] = {}
    if workers > 0:
        extra = {"persistent_workers": t.persistent_workers, "prefetch_factor": t.prefetch_factor,
                 "worker_init_fn": worker_init_fn}
    return DataLoader(SeededDataset(dataset, transform if train else None, seed), batch_sampler=sampler,
                      num_workers=workers, collate_fn=collate, pin_memory=t.pin_memory and torch.cuda.is_available(),
                      generator=torch.Generator().manual_seed(seed), **extra)
