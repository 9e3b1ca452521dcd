"""`CacheDataset`: one split of the LMDB cache as a map-style dataset of `Sample` dicts (+ "meta").

No preprocessing happens here: samples come out exactly as `preprocess.pipeline.build_sample` made them, optionally
passed through a train-time `transform(sample, rng)`. The LMDB environment is opened lazily in each DataLoader
worker by `LmdbReader`; the dataset itself pickles cheaply (for spawn workers).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from drivepipe.cache.lmdb_store import LmdbReader
from drivepipe.config import Config
from drivepipe.sample import Sample

Transform = Callable[[Sample, np.random.Generator], Sample]


class CacheDataset:
    """Samples of one split ("train" / "val" / "test") of a cache built with the same preprocess/data params as `cfg`.

    Args:
        cache_dir: the cache directory (data/cache).
        cfg: the current config; the cache header must match it (else DataError "run: dvc repro preprocess").
        split: "train", "val" or "test".
        transform: optional `transform(sample, rng) -> sample`; rng is seeded from (train.seed, epoch, index) so an
            item is reproducible regardless of the worker that loads it. Call `set_epoch` each epoch.
    """

    def __init__(self, cache_dir: str | Path, cfg: Config, split: str,
                 transform: Transform | None = None) -> None:
        self.reader = LmdbReader(cache_dir, expected=cfg)
        self.split = split
        self.transform = transform
        self.seed = int(cfg.train.seed)
        self.epoch = 0
        self._keys = self.reader.keys(split)
        counts = self.reader.header["point_counts"]
        self._points = [int(counts[self.reader.key_index(k)]) for k in self._keys]

    @property
    def header(self) -> dict[str, Any]:
        """The cache header (grid sizes, class lists, image mean/std, field shapes)."""
        return self.reader.header

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of an epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._keys)

    def key(self, index: int) -> str:
        return self._keys[index]

    def num_points(self, index: int) -> int:
        """Lidar point count of item `index` (from the header, no read), for grouping batches by size."""
        return self._points[index]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self._keys):
            raise IndexError(index)
        sample, meta = self.reader.get(self._keys[index])
        if self.transform is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            sample = self.transform(sample, rng)
        out: dict[str, Any] = dict(sample)
        out["meta"] = meta
        return out
