"""The pillar grid has one definition (`sample.ego_xy_to_pillar`): the cache (preprocess/lidar.py), augmentation
(data/augment.py) and the encoder (model/pillar_encoder.py) put a point in the same pillar, also for pillar sizes
that do not divide a round number of metres; a pillar size that does not nest with the BEV cells is refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from drivepipe.config import AugmentConfig, ConfigError, PreprocessConfig
from drivepipe.data.augment import Augmenter
from drivepipe.model.pillar_encoder import PillarEncoder
from drivepipe.preprocess.lidar import process_lidar


@pytest.mark.parametrize(("bev_size", "res", "pillar"), [
    (50, 0.6, 0.3),    # E = 15 m, 100 pillars, 2 per cell
    (40, 0.5, 0.25),   # the default ratio: E = 10 m, 80 pillars
    (30, 0.4, 1.2),    # 3 cells per pillar, 10 pillars
    (21, 0.7, 0.7),    # one pillar per cell, odd grid
])
def test_cache_augment_and_encoder_agree(bev_size: int, res: float, pillar: float) -> None:
    pre = PreprocessConfig(bev_size=bev_size, bev_resolution_m=res, pillar_size_m=pillar, max_points=1000,
                           lidar_max_range_m=100.0)
    E = bev_size * res / 2
    rng = np.random.default_rng(0)
    xy = rng.uniform(-E, E, (300, 2))
    # points on and just inside pillar edges, where formulas with different cell sizes disagree first
    edges = -E + pillar * np.arange(1, round(2 * E / pillar))
    xy = np.concatenate([xy, np.column_stack([edges + 1e-4, edges[::-1] - 1e-4])])
    sweep = np.zeros((len(xy), 6), np.float32)
    sweep[:, :2] = xy
    points, cache_index = process_lidar(sweep, pre)
    assert len(points) == len(xy)

    # the exact grid: n pillars of edge 2E / n from -E, computed here independently in float64 of the float32 points
    n = round(2 * E / pillar)
    ij = np.floor((points[:, :2].astype(np.float64) + E) / (2 * E / n)).astype(np.int64)
    assert np.array_equal(cache_index, ij[:, 0] * n + ij[:, 1])

    aug = Augmenter(AugmentConfig(point_dropout=0.0, point_noise_std_m=0.0), pre)
    out = aug._jitter_points({"points": points, "pillar_index": np.zeros(len(points), np.int64)}, rng)
    assert aug.pillar_n == n
    assert np.array_equal(out["points"], points) and np.array_equal(out["pillar_index"], cache_index)

    enc = PillarEncoder(pre, channels=4)
    assert enc.grid_n == n
    feats, _ = enc.point_features(torch.from_numpy(points)[None], torch.from_numpy(cache_index)[None])
    # offsets to the pillar centre (features 7:9, in pillar edges): every point lies inside its pillar
    assert float(feats[:, 7:9].abs().max()) <= 0.5 + 1e-4


def test_issue_example_point_is_refused_config() -> None:
    # 20 m half-extent with 0.3 m pillars: 133.3 pillars per side, the point (10, 10) fell in pillar 13266 of the
    # cache and 13400 of the augmentation; such a grid is now refused, naming the keys
    with pytest.raises(ConfigError, match=r"preprocess\.pillar_size_m.*preprocess\.bev_resolution_m"):
        PreprocessConfig(bev_size=80, bev_resolution_m=0.5, pillar_size_m=0.3)
    with pytest.raises(ConfigError, match="preprocess.pillar_size_m"):  # 3 cells per pillar, 3 does not divide 80
        PreprocessConfig(bev_size=80, bev_resolution_m=0.5, pillar_size_m=1.5)
    assert math.isclose(PreprocessConfig(bev_size=80, bev_resolution_m=0.5).pillar_size_m, 0.25)


def test_gpu_profile_pillars_nest_in_bev_cells() -> None:
    from drivepipe.profiles import profile_config

    p = profile_config("gpu-nuplan").preprocess
    per_cell = p.bev_resolution_m / p.pillar_size_m
    assert per_cell == round(per_cell) >= 1
