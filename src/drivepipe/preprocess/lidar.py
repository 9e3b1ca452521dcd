"""Lidar: range / height / BEV-square filter, intensity normalisation, point cap and pillar indexing.

Pure numpy. Input points are already in the ego frame (`schema.LidarSweep`); the pillar grid follows the BEV
convention of `drivepipe.sample` (axis -2 = ego x, axis -1 = ego y, `pillar_index = i * n + j`).
"""

from __future__ import annotations

import numpy as np

from drivepipe.config import PreprocessConfig
from drivepipe.schema import LIDAR_XYZ, LidarColumn


def pillar_grid_size(cfg: PreprocessConfig) -> int:
    """Number n of pillars per side of the BEV square: round(2E / pillar_size_m)."""
    return int(round(2.0 * cfg.bev_extent_m / cfg.pillar_size_m))


def pillar_indices(xy_N2: np.ndarray, extent_m: float, n: int) -> np.ndarray:
    """Flattened pillar cell `i * n + j` (N,) int64 of ego-frame (x, y) points inside the square of half-side
    `extent_m` split into n x n pillars (points on the far edge are clamped into the last cell)."""
    size = 2.0 * extent_m / n
    ij = np.floor((np.asarray(xy_N2, dtype=np.float64) + extent_m) / size).astype(np.int64)
    ij = np.clip(ij, 0, n - 1)
    return ij[:, 0] * n + ij[:, 1]


def process_lidar(points_N6: np.ndarray, cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """Filter, normalise, cap and pillar-index a sweep.

    Args:
        points_N6: (N, 6) float32 ego-frame sweep, columns `schema.LidarColumn`.
        cfg: preprocess config (ranges in m, intensity_max, max_points, pillar_size_m, BEV square).

    Returns:
        points (P, 4) float32 (x, y, z in m, intensity in [0, 1]) sorted by pillar index (nearest first within a
        pillar) and pillar_index (P,) int64. P <= max_points; the kept points are the nearest in x-y distance
        (ties broken by original order, so the result is deterministic).
    """
    pts = np.asarray(points_N6, dtype=np.float32)
    xyz = pts[:, LIDAR_XYZ].astype(np.float64)
    extent = cfg.bev_extent_m
    dist = np.hypot(xyz[:, 0], xyz[:, 1])
    keep = ((dist <= cfg.lidar_max_range_m) & (xyz[:, 2] >= cfg.lidar_z_min_m) & (xyz[:, 2] <= cfg.lidar_z_max_m)
            & (xyz[:, 0] >= -extent) & (xyz[:, 0] < extent) & (xyz[:, 1] >= -extent) & (xyz[:, 1] < extent)
            & np.isfinite(xyz).all(axis=1))
    idx = np.flatnonzero(keep)
    idx = idx[np.argsort(dist[idx], kind="stable")][: cfg.max_points]
    pillar = pillar_indices(xyz[idx, :2], extent, pillar_grid_size(cfg))
    order = np.argsort(pillar, kind="stable")
    idx, pillar = idx[order], pillar[order]
    out = np.empty((len(idx), 4), dtype=np.float32)
    out[:, :3] = pts[idx, LIDAR_XYZ]
    out[:, 3] = np.clip(pts[idx, LidarColumn.INTENSITY] / cfg.intensity_max, 0.0, 1.0)
    return out, pillar.astype(np.int64)
