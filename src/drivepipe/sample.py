"""`Sample`: the model-ready arrays that `preprocess.pipeline.build_sample` makes from a `SensorBundle`, that the
LMDB cache stores, and that the closed-loop agent feeds to the model. Plus `collate` for batching.

BEV convention (all rasters and the pillar grid): a square of half-side E = bev_size * bev_resolution_m / 2 centred
on the ego rear axle; array axis -2 runs along ego +x (forward), axis -1 along ego +y (left); cell (i, j) has its
centre at x = -E + (i + 0.5) * res, y = -E + (j + 0.5) * res. The pillar grid uses the same square with
pillar_size_m cells; `pillar_index = i * n + j` with n = round(2E / pillar_size_m). `pillar_grid_size` and
`ego_xy_to_pillar` below are the one definition of that grid (preprocess, augmentation and the pillar encoder use
them); `config.PreprocessConfig` refuses pillar sizes whose grid does not nest with the BEV cells.

Per-sample arrays (N = cameras, P = points, M = boxes, A = agents, Th/Tf = history/future steps, S = bev_size):
    images          uint8   (N, 3, H, W)   undistorted, resized RGB
    intrinsics      float32 (N, 3, 3)      pinhole matrix of the resized image
    cam_to_ego      float32 (N, 4, 4)      camera (OpenCV axes) -> ego
    points          float32 (P, 4)         ego-frame x, y, z (m), intensity in [0, 1]
    pillar_index    int64   (P,)           flattened pillar cell of each point
    seg             uint8   (C, S, S)      BEV map classes (preprocess.seg_classes order), 0/1
    occ             uint8   (1 + To, S, S) agent occupancy now and at To future steps, 0/1
    boxes           float32 (M, 9)         x, y, z, length, width, height, yaw, vx, vy (ego frame)
    box_labels      int64   (M,)           index into schema.CATEGORIES
    box_track       int64   (M,)           track id
    agent_box       int64   (A,)           row of each agent in boxes
    agent_labels    int64   (A,)
    agent_hist      float32 (A, Th+1, 3)   x, y, yaw; last row = now
    agent_hist_valid bool   (A, Th+1)
    agent_fut       float32 (A, Tf, 3)
    agent_fut_valid bool    (A, Tf)
    ego_hist        float32 (Th+1, 3)      ego past in the current ego frame
    ego_hist_valid  bool    (Th+1,)
    ego_state       float32 (5,)           vx, vy (m/s), ax, ay (m/s^2), yaw_rate (rad/s), ego frame
    ego_fut         float32 (Tf, 3)
    ego_fut_valid   bool    (Tf,)
    route           float32 (R, 2)         route centreline ahead, ego frame, R = ROUTE_POINTS
    route_valid     bool    (R,)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported lazily: preprocess workers import this module and never need it
    import torch

ROUTE_POINTS = 20
ROUTE_SPACING_M = 2.0

# name -> (dtype, number of leading variable-length dims: 0 fixed, 1 padded in collate, pad value)
FIELDS: dict[str, tuple[np.dtype, bool, float]] = {
    "images": (np.dtype(np.uint8), False, 0),
    "intrinsics": (np.dtype(np.float32), False, 0),
    "cam_to_ego": (np.dtype(np.float32), False, 0),
    "points": (np.dtype(np.float32), True, 0),
    "pillar_index": (np.dtype(np.int64), True, -1),
    "seg": (np.dtype(np.uint8), False, 0),
    "occ": (np.dtype(np.uint8), False, 0),
    "boxes": (np.dtype(np.float32), True, 0),
    "box_labels": (np.dtype(np.int64), True, -1),
    "box_track": (np.dtype(np.int64), True, -1),
    "agent_box": (np.dtype(np.int64), True, -1),
    "agent_labels": (np.dtype(np.int64), True, -1),
    "agent_hist": (np.dtype(np.float32), True, 0),
    "agent_hist_valid": (np.dtype(np.bool_), True, False),
    "agent_fut": (np.dtype(np.float32), True, 0),
    "agent_fut_valid": (np.dtype(np.bool_), True, False),
    "ego_hist": (np.dtype(np.float32), False, 0),
    "ego_hist_valid": (np.dtype(np.bool_), False, False),
    "ego_state": (np.dtype(np.float32), False, 0),
    "ego_fut": (np.dtype(np.float32), False, 0),
    "ego_fut_valid": (np.dtype(np.bool_), False, False),
    "route": (np.dtype(np.float32), False, 0),
    "route_valid": (np.dtype(np.bool_), False, False),
}

Sample = dict[str, np.ndarray]


def validate_sample(sample: Sample) -> None:
    """Raise ValueError naming the field when a key is missing or a dtype is wrong."""
    missing = sorted(set(FIELDS) - set(sample))
    if missing:
        raise ValueError(f"sample: missing fields {missing}")
    for name, (dtype, _, _) in FIELDS.items():
        if sample[name].dtype != dtype:
            raise ValueError(f"sample.{name}: expected {dtype}, got {sample[name].dtype}")
    m, a = len(sample["boxes"]), len(sample["agent_box"])
    if len(sample["box_labels"]) != m or len(sample["agent_hist"]) != a or len(sample["points"]) != len(
            sample["pillar_index"]):
        raise ValueError("sample: inconsistent leading dimensions")


def collate(samples: list[Sample]) -> dict[str, torch.Tensor]:
    """Stack samples into a batch; variable-length fields are padded to the longest and get a mask:
    `point_valid` (B, P), `box_valid` (B, M), `agent_valid` (B, A). A per-sample "meta" dict (log, token,
    timestamp_us, location, scenario_type, split), when present, is passed through as a list."""
    import torch

    batch: dict[str, torch.Tensor] = {}
    for name, (dtype, variable, pad) in FIELDS.items():
        arrays = [s[name] for s in samples]
        if variable:
            n = max(1, max(len(x) for x in arrays))
            out = np.full((len(arrays), n) + arrays[0].shape[1:], pad, dtype=dtype)
            for k, x in enumerate(arrays):
                out[k, : len(x)] = x
        else:
            out = np.stack(arrays)
        batch[name] = torch.from_numpy(out)
    batch["point_valid"] = batch["pillar_index"] >= 0
    batch["box_valid"] = batch["box_labels"] >= 0
    batch["agent_valid"] = batch["agent_labels"] >= 0
    if "meta" in samples[0]:
        batch["meta"] = [s["meta"] for s in samples]  # type: ignore[assignment]
    return batch


def bev_cell_centers(bev_size: int, resolution_m: float) -> np.ndarray:
    """(S,) cell-centre coordinates along either BEV axis, metres."""
    extent = bev_size * resolution_m / 2.0
    return -extent + (np.arange(bev_size) + 0.5) * resolution_m


def ego_xy_to_cell(xy_N2: np.ndarray, bev_size: int, resolution_m: float) -> np.ndarray:
    """Ego-frame (x, y) -> integer (i, j) cell indices (N, 2); cells outside the grid are not clipped."""
    extent = bev_size * resolution_m / 2.0
    return np.floor((np.asarray(xy_N2) + extent) / resolution_m).astype(np.int64)


def pillar_grid_size(bev_size: int, resolution_m: float, pillar_m: float) -> int:
    """Pillars n per side of the BEV square of side bev_size * resolution_m (a whole number for a valid config)."""
    return int(round(bev_size * resolution_m / pillar_m))


def pillar_cell_m(bev_size: int, resolution_m: float, pillar_m: float) -> tuple[int, float, float]:
    """(n, pillar edge 2E / n in m, half-extent E in m) of the pillar grid."""
    n = pillar_grid_size(bev_size, resolution_m, pillar_m)
    extent = bev_size * resolution_m / 2.0
    return n, 2.0 * extent / n, extent


def ego_xy_to_pillar(xy_N2: np.ndarray, bev_size: int, resolution_m: float, pillar_m: float,
                     clamp: bool = False) -> np.ndarray:
    """Ego-frame (x, y) (N, 2) m -> flattened pillar cell `i * n + j` (N,) int64. Points outside the BEV square get
    -1, or with `clamp` the nearest edge cell (preprocess clamps points that rounding puts on the far edge)."""
    n, size, extent = pillar_cell_m(bev_size, resolution_m, pillar_m)
    ij = np.floor((np.asarray(xy_N2, dtype=np.float64) + extent) / size).astype(np.int64)
    if clamp:
        ij = np.clip(ij, 0, n - 1)
    inside = np.all((ij >= 0) & (ij < n), axis=1)
    return np.where(inside, ij[:, 0] * n + ij[:, 1], -1)


def to_device(batch: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """Move every tensor of a batch to a device (non-blocking when pinned)."""
    import torch

    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
