"""The ego of the synthetic world: its route through the lane graph, a kinematic bicycle model (rear-axle
reference, nuPlan Pacifica dimensions) and the built-in expert (IDM speed control + pure-pursuit steering).

Frames: poses are global UTM (m, rad). Route arc length s (m) runs along the concatenated centreline of the route's
lanes and lane connectors; the ego's route position is the projection of its rear axle onto that centreline.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace

import numpy as np

from drivepipe.idm import idm_accel
from drivepipe.vehicle import EGO_FRONT_M, EGO_REAR_M, WHEELBASE_M, kinematic_bicycle
from drivepipe.world.roads import LaneGraph
from drivepipe.world.traffic import TRAFFIC_IDM

EGO_LENGTH_M = EGO_FRONT_M + EGO_REAR_M
EGO_CENTER_OFFSET_M = (EGO_FRONT_M - EGO_REAR_M) / 2  # rear axle -> box centre, along heading
MAX_STEER_RAD = 0.6


@dataclass(frozen=True)
class Route:
    """Ordered lane-graph edges (lanes and connectors). `start_s` (K,) route arc length at which each edge begins;
    `pts` (R, 2) UTM m and `cum` (R,) m the concatenated centreline."""

    edges: tuple[int, ...]
    start_s: np.ndarray
    pts: np.ndarray
    cum: np.ndarray

    @property
    def length(self) -> float:
        """Total route length (m)."""
        return float(self.cum[-1])

    def element_at(self, s: float) -> int:
        """Index into `edges` of the element containing route arc length s."""
        return min(max(bisect.bisect_right(self.start_s, s) - 1, 0), len(self.edges) - 1)

    def point_at(self, s: float) -> np.ndarray:
        """(2,) centreline point at arc length s (clipped to the route)."""
        return np.array([np.interp(s, self.cum, self.pts[:, 0]), np.interp(s, self.cum, self.pts[:, 1])])

    def project(self, xy: np.ndarray, s_hint: float, back_m: float = 10.0, ahead_m: float = 40.0
                ) -> tuple[float, float]:
        """Arc length (m) and signed lateral offset (m, left +) of point xy, searched near s_hint."""
        lo = max(int(np.searchsorted(self.cum, s_hint - back_m)) - 1, 0)
        hi = min(int(np.searchsorted(self.cum, s_hint + ahead_m)) + 1, len(self.cum) - 1)
        a, b = self.pts[lo:hi], self.pts[lo + 1:hi + 1]
        seg = b - a
        seg_len = np.maximum(np.linalg.norm(seg, axis=1), 1e-9)
        t = np.clip(np.einsum("ij,ij->i", xy - a, seg) / seg_len ** 2, 0.0, 1.0)
        d = np.linalg.norm(a + t[:, None] * seg - xy, axis=1)
        k = int(np.argmin(d))
        cross = seg[k, 0] * (xy[1] - a[k, 1]) - seg[k, 1] * (xy[0] - a[k, 0])
        return float(self.cum[lo + k] + t[k] * seg_len[k]), float(np.sign(cross) * d[k])


def random_route(graph: LaneGraph, rng: np.random.Generator, start_edge: int, min_length_m: float) -> Route:
    """Random drive through the grid from `start_edge` until the route is at least `min_length_m` long.

    At each intersection a turn is taken with probability 0.4, and always after two straight crossings, so routes
    contain turns; connectors are followed into their unique exit lane.
    """
    edges, total, since_turn = [start_edge], float(graph.length[start_edge]), 0
    while total < min_length_m:
        succ = graph.successors[edges[-1]]
        if graph.is_connector[edges[-1]]:
            nxt = succ[0]
        else:
            turning = [c for c in succ if graph.turn[c] != "straight"]
            straight = [c for c in succ if graph.turn[c] == "straight"]
            use_turn = bool(turning) and (not straight or since_turn >= 2 or rng.random() < 0.4)
            pool = turning if use_turn else straight
            nxt = pool[int(rng.integers(len(pool)))]
            since_turn = 0 if use_turn else since_turn + 1
        edges.append(int(nxt))
        total += float(graph.length[nxt])
    return make_route(graph, edges)


def make_route(graph: LaneGraph, edges: list[int]) -> Route:
    """Concatenate the centrelines of consecutive edges (shared junction points kept once)."""
    parts = [graph.polyline(e) if i == 0 else graph.polyline(e)[1:] for i, e in enumerate(edges)]
    pts = np.concatenate(parts)
    cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    start_s = np.concatenate([[0.0], np.cumsum(graph.length[edges])[:-1]])
    return Route(tuple(edges), start_s, pts, cum)


@dataclass(frozen=True)
class BicycleState:
    """Rear-axle pose (UTM m, rad), speed v (m/s, along heading), longitudinal acceleration (m/s^2), yaw rate
    (rad/s), steering angle (rad) and route arc length of the rear axle (m)."""

    x: float
    y: float
    yaw: float
    v: float = 0.0
    acc: float = 0.0
    yaw_rate: float = 0.0
    steer: float = 0.0
    route_s: float = 0.0


def bicycle_step(state: BicycleState, acc: float, steer: float, dt: float) -> BicycleState:
    """Kinematic bicycle about the rear axle, integrated with midpoint speed and heading over dt (s)."""
    x, y, yaw, v_new, yaw_rate = kinematic_bicycle(state.x, state.y, state.yaw, state.v, acc, steer, dt)
    return replace(state, x=x, y=y, yaw=yaw, v=v_new, acc=(v_new - state.v) / dt, yaw_rate=yaw_rate, steer=steer)


class ExpertDriver:
    """Route-following expert: IDM against leader / stop point / pedestrians, curve-speed look-ahead, and pure
    pursuit on the route centreline."""

    def __init__(self, graph: LaneGraph, route: Route, target_speed: float) -> None:
        self.graph, self.route, self.target_speed = graph, route, target_speed

    def desired_speed(self, s: float) -> float:
        """Free-road speed (m/s) at route arc length s: target, current edge's curve speed and a comfortable
        braking profile (1.5 m/s^2) to the curve speed of the next three edges."""
        k = self.route.element_at(s)
        v0 = min(self.target_speed, float(self.graph.curve_speed[self.route.edges[k]]))
        for j in range(k + 1, min(k + 4, len(self.route.edges))):
            d = max(float(self.route.start_s[j]) - s - EGO_FRONT_M / 2, 0.0)
            v0 = min(v0, float(np.sqrt(self.graph.curve_speed[self.route.edges[j]] ** 2 + 3.0 * d)))
        return v0

    def acceleration(self, state: BicycleState, gaps: list[tuple[float, float]]) -> float:
        """IDM acceleration (m/s^2) given (bumper gap m, obstacle speed m/s) pairs of leader / stop points."""
        v0 = self.desired_speed(state.route_s)
        gap, v_lead = np.array([(np.inf, 0.0)] + list(gaps)).T
        return float(idm_accel(np.full(len(gap), state.v), np.full(len(gap), v0), gap, v_lead,
                               TRAFFIC_IDM).min())

    def steering(self, state: BicycleState) -> float:
        """Pure-pursuit steering angle (rad) toward the route point one look-ahead distance ahead."""
        look = float(np.clip(3.0 + 0.5 * state.v, 4.0, 10.0))
        target = self.route.point_at(state.route_s + look)
        dx, dy = target[0] - state.x, target[1] - state.y
        c, s = np.cos(state.yaw), np.sin(state.yaw)
        lx, ly = c * dx + s * dy, -s * dx + c * dy
        curvature = 2.0 * ly / max(lx * lx + ly * ly, 1e-6)
        return float(np.clip(np.arctan(WHEELBASE_M * curvature), -MAX_STEER_RAD, MAX_STEER_RAD))
