"""`SensorBundle`: the versioned contract between data sources (nuPlan reader, synthetic world, closed-loop
simulator) and everything downstream (preprocessing, the cache, the model).

Frames: global = city UTM (m); ego = rear axle, x forward, y left, z up (m); camera = OpenCV (x right, y down,
z forward). Times are integer microseconds since the Unix epoch. Sensor inputs (`cameras`, `lidar`, `ego`) are
kept apart from ground truth (`annotations`): a model or agent may read only the inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np

from drivepipe.utils import detmath

SCHEMA_VERSION = 2  # 2: CameraFrame.downscale

# The seven nuPlan categories, in the index order used by every array in the project.
CATEGORIES = ("vehicle", "bicycle", "pedestrian", "traffic_cone", "barrier", "czone_sign", "generic_object")
AGENT_CATEGORIES = ("vehicle", "bicycle", "pedestrian")  # carry velocity and get trajectory targets
CATEGORY_INDEX = {name: i for i, name in enumerate(CATEGORIES)}


class LidarColumn(IntEnum):
    """Column layout of `LidarSweep.points` (the devkit's pcd-bin2 rows, transposed)."""

    X = 0
    Y = 1
    Z = 2
    INTENSITY = 3
    RING = 4
    LIDAR_INFO = 5


LIDAR_XYZ = slice(LidarColumn.X, LidarColumn.Z + 1)


@dataclass(frozen=True)
class CameraCalibration:
    """One camera of the rig, as stored in the nuPlan `camera` table.

    intrinsic: (3, 3) float64 pinhole matrix in pixels of the stored (distorted) image.
    distortion: (5,) float64 Caltech/OpenCV order k1, k2, p1, p2, k3.
    T_ego_from_cam: (4, 4) float64 camera (OpenCV axes) -> ego transform.
    """

    channel: str
    width: int
    height: int
    intrinsic: np.ndarray
    distortion: np.ndarray
    T_ego_from_cam: np.ndarray
    model: str = "synthetic"


@dataclass(frozen=True)
class CameraFrame:
    """image: (H, W, 3) uint8 RGB as captured (distorted).

    `downscale` 1: H/W equal the calibration's height/width. 2, 4 or 8: the JPEG was decoded at that reduction (DCT
    scaling, `nuplan.bundle.read_jpeg`), H = ceil(height / downscale), W = ceil(width / downscale); output pixel u
    covers stored pixels [u * downscale, (u + 1) * downscale), so the calibration applies with
    `preprocess.image.downscaled_intrinsics`.
    """

    calibration: CameraCalibration
    image: np.ndarray
    timestamp_us: int
    token: str = ""
    downscale: int = 1


@dataclass(frozen=True)
class LidarSweep:
    """points: (N, 6) float32 in the EGO frame, columns `LidarColumn` (intensity raw, ring, lidar_info as floats).

    T_ego_from_lidar is the stored extrinsic that the reader already applied (kept for reference).
    """

    points: np.ndarray
    timestamp_us: int
    T_ego_from_lidar: np.ndarray = field(default_factory=lambda: np.eye(4))
    token: str = ""


@dataclass(frozen=True)
class EgoState:
    """The ego at the sample time.

    T_global_from_ego: (4, 4) float64 rear-axle pose in the global (UTM) frame.
    velocity_mps, acceleration_mps2, angular_rate_rps: (3,) float64 in the ego frame.
    history: (Th + 1, 3) float64 past (x, y, yaw) in the CURRENT ego frame at `traj_dt_s`, oldest first,
        last row is now (0, 0, 0); history_valid: (Th + 1,) bool.
    """

    T_global_from_ego: np.ndarray
    velocity_mps: np.ndarray
    acceleration_mps2: np.ndarray
    angular_rate_rps: np.ndarray
    history: np.ndarray
    history_valid: np.ndarray

    @property
    def heading_rad(self) -> float:
        return float(detmath.arctan2(self.T_global_from_ego[1, 0], self.T_global_from_ego[0, 0]))


@dataclass(frozen=True)
class Boxes:
    """3-D boxes in the ego frame at the sample time (M boxes).

    center: (M, 3) m; size: (M, 3) length, width, height m; yaw: (M,) rad; velocity: (M, 2) m/s (ego frame);
    category: (M,) int64 index into CATEGORIES; track_id: (M,) int64 stable per track within a log.
    """

    center: np.ndarray
    size: np.ndarray
    yaw: np.ndarray
    velocity: np.ndarray
    category: np.ndarray
    track_id: np.ndarray

    @staticmethod
    def empty() -> "Boxes":
        return Boxes(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros((0, 2)),
                     np.zeros(0, np.int64), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return int(self.center.shape[0])


@dataclass(frozen=True)
class AgentTracks:
    """Past and future of the agents (AGENT_CATEGORIES) present now, in the CURRENT ego frame.

    box_index: (A,) int64 row of each agent in `Annotations.boxes`.
    history: (A, Th + 1, 3) (x, y, yaw), oldest first, last = now; history_valid: (A, Th + 1) bool.
    future: (A, Tf, 3) (x, y, yaw) at dt, 2 dt, ...; future_valid: (A, Tf) bool.
    """

    box_index: np.ndarray
    history: np.ndarray
    history_valid: np.ndarray
    future: np.ndarray
    future_valid: np.ndarray

    def __len__(self) -> int:
        return int(self.box_index.shape[0])


@dataclass(frozen=True)
class Annotations:
    """Ground truth: never an input to the model.

    map_layers: layer name -> list of shapely geometries already in the ego frame, clipped to the area around
        the ego (layers: drivable_area, lane, lane_divider, crosswalk, walkway, stop_line, intersection, centerline).
    ego_future: (Tf, 3) (x, y, yaw) in the current ego frame; ego_future_valid: (Tf,) bool.
    route: (R, 2) route centreline ahead of the ego in the ego frame (m), may be empty.
    route_lights: (L, 3) traffic lights of the route's lane connectors ahead: entry point x, y in the ego frame (m)
        and status code (LIGHT_CODES index: green, yellow, red, unknown); closed-loop input, like the route.
    """

    boxes: Boxes
    agents: AgentTracks
    map_layers: dict[str, list[Any]]
    ego_future: np.ndarray
    ego_future_valid: np.ndarray
    route: np.ndarray
    route_lights: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))


LIGHT_CODES = ("green", "yellow", "red", "unknown")  # Annotations.route_lights status codes


@dataclass(frozen=True)
class BundleMeta:
    log_name: str
    token: str          # anchor lidar_pc token (16 hex)
    timestamp_us: int
    location: str       # map location, e.g. us-nv-las-vegas-strip
    scenario_type: str = "unknown"
    conditions: dict | None = None  # synthetic logs: recording conditions (time_of_day, weather, ...); else None


@dataclass(frozen=True)
class SensorBundle:
    """One frame of sensor inputs plus its ground truth. See the module docstring for frames and units."""

    meta: BundleMeta
    cameras: dict[str, CameraFrame]
    lidar: LidarSweep
    ego: EgoState
    annotations: Annotations | None
    schema_version: int = SCHEMA_VERSION

    def validate(self) -> None:
        """Raise ValueError naming the field when a dtype, shape or range is wrong."""
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"schema_version {self.schema_version} != {SCHEMA_VERSION}")
        for name, cam in self.cameras.items():
            img, cal = cam.image, cam.calibration
            _expect(img.dtype == np.uint8 and img.shape == (cal.height, cal.width, 3),
                    f"cameras[{name}].image: expected uint8 ({cal.height}, {cal.width}, 3), got {img.dtype} {img.shape}")
            _expect(cal.intrinsic.shape == (3, 3) and cal.distortion.shape == (5,),
                    f"cameras[{name}].calibration: intrinsic (3,3) and distortion (5,) required")
            _expect(_is_rigid(cal.T_ego_from_cam), f"cameras[{name}].calibration.T_ego_from_cam: not a rigid transform")
        pts = self.lidar.points
        _expect(pts.dtype == np.float32 and pts.ndim == 2 and pts.shape[1] == len(LidarColumn),
                f"lidar.points: expected float32 (N, {len(LidarColumn)}), got {pts.dtype} {pts.shape}")
        _expect(bool(np.isfinite(pts[:, LIDAR_XYZ]).all()), "lidar.points: non-finite coordinates")
        _expect(_is_rigid(self.ego.T_global_from_ego), "ego.T_global_from_ego: not a rigid transform")
        if self.annotations is not None:
            b = self.annotations.boxes
            m = len(b)
            _expect(b.size.shape == (m, 3) and b.yaw.shape == (m,) and b.velocity.shape == (m, 2),
                    "annotations.boxes: inconsistent shapes")
            _expect(bool((b.size > 0).all()), "annotations.boxes.size: must be positive")
            _expect(bool(((b.category >= 0) & (b.category < len(CATEGORIES))).all()),
                    "annotations.boxes.category: index out of range")
            a = self.annotations.agents
            _expect(a.history.shape[:1] == a.future.shape[:1] == a.box_index.shape,
                    "annotations.agents: inconsistent agent counts")


def _expect(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _is_rigid(T: np.ndarray) -> bool:
    return T.shape == (4, 4) and bool(np.allclose(detmath.matmul(T[:3, :3], T[:3, :3].T), np.eye(3), atol=1e-5))
