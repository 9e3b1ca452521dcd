"""Per-tick measurements of a closed-loop step row that need the world, shared by the backends (vectorised):
time-to-collision under constant velocity, the speed limit under the ego, and the route's traffic lights ahead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely

from drivepipe.schema import LIGHT_CODES
from drivepipe.utils.geometry import box_corners_2d, global_to_ego_xy_yaw
from drivepipe.vehicle import EGO_FRONT_M, EGO_REAR_M, EGO_WIDTH_M

TTC_THRESHOLD_S = 0.95    # nuPlan: TTC below this is a violation
TTC_STEP_S = 0.1          # projection step (s)
STOPPED_MPS = 0.1         # nuPlan: no TTC violation while the ego stands
LIGHTS_AHEAD_M = 80.0     # route lights handed to the agent, ahead of the ego


def overlap_many(a_N42: np.ndarray, b_N42: np.ndarray) -> np.ndarray:
    """(N,) bool: separating-axis test of N pairs of convex quadrilaterals, vectorised."""
    if len(a_N42) == 0:
        return np.zeros(0, bool)
    sep = np.zeros(len(a_N42), bool)
    for poly in (a_N42, b_N42):
        edges = np.roll(poly, -1, axis=1) - poly                       # (N, 4, 2)
        axes = np.stack([-edges[..., 1], edges[..., 0]], -1)           # (N, 4, 2)
        pa = np.einsum("nkd,njd->nkj", axes, a_N42)                     # (N, 4 axes, 4 corners)
        pb = np.einsum("nkd,njd->nkj", axes, b_N42)
        sep |= np.any((pa.max(2) < pb.min(2)) | (pb.max(2) < pa.min(2)), axis=1)
    return ~sep


def ego_box(x: float, y: float, yaw: float) -> np.ndarray:
    off = (EGO_FRONT_M - EGO_REAR_M) / 2
    c = np.array([[x + off * np.cos(yaw), y + off * np.sin(yaw)]])
    return box_corners_2d(c, np.array([EGO_FRONT_M + EGO_REAR_M]), np.array([EGO_WIDTH_M]), np.array([yaw]))[0]


def time_to_collision(ego: Any, actors_A7: np.ndarray) -> float:
    """Smallest time (s) <= TTC_THRESHOLD_S at which the ego and an actor AHEAD of it, both moving at constant
    velocity, overlap (inf if none; inf while the ego stands). actors: (A, 7) x, y, yaw, length, width, vx, vy.
    Boxes keep their yaw, so the corners at time t are the corners now moved by velocity x t: one corner
    computation, then one vectorised overlap test over every (time, actor) pair."""
    if ego.vx < STOPPED_MPS or len(actors_A7) == 0:
        return float("inf")
    rel, _ = global_to_ego_xy_yaw(actors_A7[:, :2], np.zeros(len(actors_A7)), ego.x, ego.y, ego.yaw)
    reach = ego.vx * TTC_THRESHOLD_S + np.hypot(actors_A7[:, 5], actors_A7[:, 6]) * TTC_THRESHOLD_S + 10.0
    a = actors_A7[(rel[:, 0] > 0.0) & (np.hypot(rel[:, 0], rel[:, 1]) < reach)]
    if len(a) == 0:
        return float("inf")
    times = np.arange(1, int(TTC_THRESHOLD_S / TTC_STEP_S) + 1) * TTC_STEP_S            # (T,)
    ego_v = ego.vx * np.array([np.cos(ego.yaw), np.sin(ego.yaw)])
    eb = ego_box(ego.x, ego.y, ego.yaw)[None, None] + times[:, None, None, None] * ego_v    # (T, 1, 4, 2)
    ab = box_corners_2d(a[:, :2], a[:, 3], a[:, 4], a[:, 2])[None] \
        + times[:, None, None, None] * a[None, :, None, 5:7]                                 # (T, A, 4, 2)
    eb = np.broadcast_to(eb, ab.shape)
    hit = overlap_many(eb.reshape(-1, 4, 2), ab.reshape(-1, 4, 2)).reshape(len(times), len(a))
    k = np.flatnonzero(hit.any(axis=1))
    return float(times[k[0]]) if len(k) else float("inf")


class SpeedLimits:
    """Speed limit (m/s) of the lane or lane connector under a point, from the map (nan where none is given)."""

    def __init__(self, vmap: Any) -> None:
        self.vmap = vmap
        self.conn = {int(f.fid): f.props.get("speed_limit_mps") for f in vmap.layer("lane_connectors")}

    def at(self, x: float, y: float) -> float:
        p, box = shapely.Point(x, y), (x - 0.1, y - 0.1, x + 0.1, y + 0.1)
        for f in self.vmap.query("lanes_polygons", box):
            if f.geometry.contains(p) and f.props.get("speed_limit_mps") not in (None, ""):
                return float(f.props["speed_limit_mps"])
        for f in self.vmap.query("gen_lane_connectors_scaled_width_polygons", box):
            v = self.conn.get(int(f.props.get("lane_connector_fid", f.fid) or -1))
            if f.geometry.contains(p) and v not in (None, ""):
                return float(v)
        return float("nan")


def lights_ahead(route_lights: list[tuple[int, Any]], status: dict[int, str], ego: Any) -> np.ndarray:
    """(L, 3) the route's connector entries within LIGHTS_AHEAD_M ahead in the ego frame with their status code
    (schema.LIGHT_CODES; a connector without a logged status is "unknown")."""
    if not route_lights:
        return np.zeros((0, 3))
    xy = np.array([p for _, p in route_lights], dtype=np.float64).reshape(-1, 2)
    local, _ = global_to_ego_xy_yaw(xy, np.zeros(len(xy)), ego.x, ego.y, ego.yaw)
    code = np.array([LIGHT_CODES.index(status.get(int(f), "unknown")) if status.get(int(f), "unknown") in LIGHT_CODES
                     else LIGHT_CODES.index("unknown") for f, _ in route_lights], np.float64)
    keep = (local[:, 0] > -1.0) & (np.hypot(local[:, 0], local[:, 1]) < LIGHTS_AHEAD_M)
    return np.column_stack([local, code])[keep]
