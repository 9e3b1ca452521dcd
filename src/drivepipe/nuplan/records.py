"""Plain records of one nuPlan log as numpy arrays (sweeps, images, boxes), the token and time-matching helpers
that build them, and the `camera` row parser. `nuplan.db.NuplanLog` fills them; nothing here runs SQL."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drivepipe.errors import DataError
from drivepipe.nuplan.pickles import loads_calibration
from drivepipe.schema import CameraCalibration
from drivepipe.utils import detmath
from drivepipe.utils.geometry import make_transform


def nearest_index(sorted_us: np.ndarray, targets_us: np.ndarray | int, tol_us: int, inclusive: bool = True
                  ) -> np.ndarray:
    """Index into `sorted_us` of the value nearest each target (ties: the earlier one), -1 where it is farther than
    `tol_us` (or exactly `tol_us` away when not `inclusive`). Any target shape; int64 result of that shape."""
    targets = np.asarray(targets_us, dtype=np.int64)
    if sorted_us.size == 0:
        return np.full(targets.shape, -1, np.int64)
    j = np.searchsorted(sorted_us, targets)
    lo, hi = np.clip(j - 1, 0, sorted_us.size - 1), np.clip(j, 0, sorted_us.size - 1)
    best = np.where(np.abs(sorted_us[lo] - targets) <= np.abs(sorted_us[hi] - targets), lo, hi)
    gap = np.abs(sorted_us[best] - targets)
    return np.where(gap <= tol_us if inclusive else gap < tol_us, best, -1).astype(np.int64)


def track_ids(tokens: tuple) -> np.ndarray:
    """`track_id_from_token` of many tokens; 8-byte tokens in one numpy pass, -1 for a missing token."""
    if all(isinstance(t, bytes) and len(t) == 8 for t in tokens):
        return (np.frombuffer(b"".join(tokens), ">u8") & np.uint64(2**63 - 1)).astype(np.int64)
    return np.array([track_id_from_token(t) if t is not None else -1 for t in tokens], np.int64)


def track_id_from_token(token: bytes) -> int:
    """Stable int64 track id of an 8-byte track token (the writer uses `track_id.to_bytes(8, "big")`)."""
    return int.from_bytes(bytes(token), "big") & (2**63 - 1)


@dataclass(frozen=True)
class Scene:
    token: str
    name: str
    roadblock_ids: tuple[int, ...]  # route lane-group / lane-group-connector fids, in stored order


@dataclass(frozen=True)
class LidarPcs:
    """All sweeps of the log ordered by time (N rows); ego arrays hold the linked ego_pose of each row.

    xyz (N, 3) m global; quat (N, 4) w-first global; velocity, acceleration, angular_rate (N, 3) ego frame."""

    token: np.ndarray            # (N,) str, 16 hex
    timestamp_us: np.ndarray     # (N,) int64
    scene_token: np.ndarray      # (N,) str
    ego_pose_token: np.ndarray   # (N,) str
    filename: np.ndarray         # (N,) object str, relative to the sensor root
    xyz: np.ndarray
    quat: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    angular_rate: np.ndarray

    def __len__(self) -> int:
        return int(self.timestamp_us.shape[0])


@dataclass(frozen=True)
class ChannelImages:
    """Images of one camera ordered by time: timestamp_us (K,) int64, token (K,) str, filename (K,) object,
    ego_pose_token (K,) str (16 hex, "" where NULL)."""

    timestamp_us: np.ndarray
    token: np.ndarray
    filename: np.ndarray
    ego_pose_token: np.ndarray


@dataclass(frozen=True)
class BoxTable:
    """All lidar_box rows of the log, sorted by sweep; rows of sweep i are `offsets[i]:offsets[i + 1]`.

    center (M, 3) m global; size (M, 3) length, width, height m; yaw (M,) rad global; velocity (M, 3) m/s global;
    category (M,) int64 index into schema.CATEGORIES; track_id (M,) int64."""

    offsets: np.ndarray
    center: np.ndarray
    size: np.ndarray
    yaw: np.ndarray
    velocity: np.ndarray
    category: np.ndarray
    track_id: np.ndarray

    def rows(self, index: int) -> slice:
        return slice(int(self.offsets[index]), int(self.offsets[index + 1]))


# ----------------------------------------------------------------------------------------------- camera rows
def _vector(values: Any, n: int, source: str, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.shape != (n,) or not np.isfinite(arr).all():
        raise DataError(source, f"{what} must be {n} finite numbers, got {values!r}")
    return arr


def _unit_quaternion(values: Any, source: str) -> np.ndarray:
    q = _vector(values, 4, source, "rotation")
    norm = float(detmath.norm(q))
    if abs(norm - 1.0) > 1e-3:
        raise DataError(source, f"rotation is not a unit quaternion (norm {norm:.6f})")
    return q / norm


def lidar_extrinsic(src: str, t_blob: bytes, r_blob: bytes) -> np.ndarray:
    """The `lidar` row's translation and rotation pickles -> (4, 4) T_ego_from_lidar (errors name `src`)."""
    translation = _vector(loads_calibration(t_blob, f"{src}.translation"), 3, src, "translation")
    rotation = _unit_quaternion(loads_calibration(r_blob, f"{src}.rotation"), src)
    return make_transform(rotation, translation)


def camera_calibration(db_path: Path, row: tuple) -> CameraCalibration:
    """One `camera` row -> CameraCalibration, with sanity checks (unit quaternion, positive focal lengths)."""
    channel, model, t_blob, r_blob, k_blob, d_blob, width, height = row
    src = f"{db_path}:camera.{channel}"
    translation = _vector(loads_calibration(t_blob, f"{src}.translation"), 3, src, "translation")
    rotation = _unit_quaternion(loads_calibration(r_blob, f"{src}.rotation"), src)
    K = _vector(loads_calibration(k_blob, f"{src}.intrinsic"), 9, src, "intrinsic").reshape(3, 3)
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise DataError(src, f"intrinsic focal lengths must be positive, got fx={K[0, 0]}, fy={K[1, 1]}")
    dist = _vector(loads_calibration(d_blob, f"{src}.distortion"), 5, src, "distortion")
    if width is None or height is None or int(width) <= 0 or int(height) <= 0:
        raise DataError(src, f"image size must be positive, got {width}x{height}")
    return CameraCalibration(channel=str(channel), width=int(width), height=int(height), intrinsic=K,
                             distortion=dist, T_ego_from_cam=make_transform(rotation, translation),
                             model=str(model or ""))
