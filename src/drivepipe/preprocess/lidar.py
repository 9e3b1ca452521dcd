"""Lidar: range / height / BEV-square filter, intensity normalisation, point cap and pillar indexing.

Pure numpy. Input points are already in the ego frame (`schema.LidarSweep`); the pillar grid follows the BEV
convention of `drivepipe.sample` (axis -2 = ego x, axis -1 = ego y, `pillar_index = i * n + j`).
"""

from __future__ import annotations

import numpy as np

from drivepipe.config import PreprocessConfig
from drivepipe.sample import ego_xy_to_pillar
from drivepipe.sample import pillar_grid_size as sample_pillar_grid_size
from drivepipe.schema import LidarColumn
from drivepipe.utils import detmath


def pillar_grid_size(cfg: PreprocessConfig) -> int:
    """Number n of pillars per side of the BEV square: round(2E / pillar_size_m) (`sample.pillar_grid_size`)."""
    return sample_pillar_grid_size(cfg.bev_size, cfg.bev_resolution_m, cfg.pillar_size_m)


def process_lidar(points_N6: np.ndarray, cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """Filter, normalise, cap and pillar-index a sweep.

    Args:
        points_N6: (N, 6) float32 ego-frame sweep, columns `schema.LidarColumn`.
        cfg: preprocess config (ranges in m, intensity_max, max_points, pillar_size_m, BEV square).

    Returns:
        points (P, 4) float32 (x, y, z in m, intensity in [0, 1]) sorted by pillar index (input order within a
        pillar: the pillar encoder pools over a pillar, so order inside it does not matter) and pillar_index (P,)
        int64. P <= max_points; the kept points are the nearest in x-y distance (ties broken by input order, so
        the result is deterministic).
    """
    pts = np.asarray(points_N6, dtype=np.float32)
    x, y, z = pts[:, LidarColumn.X], pts[:, LidarColumn.Y], pts[:, LidarColumn.Z]
    extent = cfg.bev_extent_m
    # comparisons are False for NaN, so non-finite points fall out here too
    idx = np.flatnonzero((x >= -extent) & (x < extent) & (y >= -extent) & (y < extent)
                         & (z >= cfg.lidar_z_min_m) & (z <= cfg.lidar_z_max_m))  # input order kept throughout
    px, py = x[idx].astype(np.float64), y[idx].astype(np.float64)
    dist = detmath.hypot(px, py)
    in_range = dist <= cfg.lidar_max_range_m
    if not in_range.all():
        idx, px, py, dist = idx[in_range], px[in_range], py[in_range], dist[in_range]
    if len(idx) > cfg.max_points:  # the max_points nearest; at the cut distance the earliest points win
        cut = np.partition(dist, cfg.max_points - 1)[cfg.max_points - 1]
        chosen = dist < cut
        chosen[np.flatnonzero(dist == cut)[: cfg.max_points - int(chosen.sum())]] = True
        idx, px, py = idx[chosen], px[chosen], py[chosen]
    n = pillar_grid_size(cfg)
    pillar = ego_xy_to_pillar(np.column_stack([px, py]), cfg.bev_size, cfg.bev_resolution_m, cfg.pillar_size_m,
                              clamp=True)
    # by pillar, then input order (a stable sort by pillar): numpy radix-sorts 16-bit keys; larger grids sort the
    # unique key (pillar, position) with the fast unstable sort (numpy's stable sort of int64 is several times slower)
    if n * n <= 1 << 16:
        order = np.argsort(pillar.astype(np.uint16), kind="stable")
    else:
        order = np.argsort((pillar << 32) | np.arange(len(idx)))
    rows = np.take(pts, idx[order], axis=0)
    out = np.empty((len(rows), 4), dtype=np.float32)
    for c in (LidarColumn.X, LidarColumn.Y, LidarColumn.Z):  # per column: faster than an (N, 3) strided copy
        out[:, c] = rows[:, c]
    np.clip(rows[:, LidarColumn.INTENSITY] / cfg.intensity_max, 0.0, 1.0, out=out[:, 3])
    return out, pillar[order]
