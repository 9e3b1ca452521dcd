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
from drivepipe.utils import detmath
from drivepipe.vehicle import EGO_FRONT_M, EGO_REAR_M, WHEELBASE_M, kinematic_bicycle
from drivepipe.world.roads import LaneGraph
from drivepipe.world.traffic import TRAFFIC_IDM

EGO_LENGTH_M = EGO_FRONT_M + EGO_REAR_M
EGO_CENTER_OFFSET_M = (EGO_FRONT_M - EGO_REAR_M) / 2  # rear axle -> box centre, along heading
MAX_STEER_RAD = 0.6


LANE_CHANGE_M = 20.0        # m of route over which a lane change blends from one lane into its neighbour
LANE_CHANGE_P = 0.3         # probability of a discretionary lane change where a neighbour lane also goes the way
LANE_CHANGE_COMMIT_M = 4.0  # m before the blend's start where the rear axle commits (pure pursuit starts to turn in)
LANE_CHANGE_MIN_GAP_M = 2.0  # m, bumper gap the ego keeps to both its new leader and its new follower
LANE_CHANGE_SAFE_DECEL = 2.0  # m/s^2 neither the ego nor its new follower may need to brake harder (MOBIL safety)


@dataclass(frozen=True)
class Route:
    """Ordered lane-graph edges (lanes and connectors). `start_s` (K,) route arc length at which each edge's own
    arc length 0 lies (edge s -> route s = start_s + s); `switch_s` (K,) route arc length from which the ego is on
    that edge (differs from start_s only after a lane change, where the ego crosses into the neighbour lane at the
    middle of the manoeuvre); `pts` (R, 2) UTM m and `cum` (R,) m the centreline the ego follows. `lane_changes`:
    (route s where the change starts, where it ends, "left" | "right") per lane change."""

    edges: tuple[int, ...]
    start_s: np.ndarray
    pts: np.ndarray
    cum: np.ndarray
    switch_s: np.ndarray | None = None
    lane_changes: tuple[tuple[float, float, str], ...] = ()

    def changes_by_element(self) -> dict[int, tuple[float, float, str]]:
        """{index into `edges` of a lane entered by a lane change: (start s, end s, side) of that change}."""
        into = [j for j in range(1, len(self.edges)) if self.start_s[j] == self.start_s[j - 1]]
        return dict(zip(into, self.lane_changes))

    def lane_change_at(self, s: float) -> str | None:
        """Direction ("left" / "right") of the lane change in progress at route arc length s, else None."""
        for s0, s1, side in self.lane_changes:
            if s0 <= s <= s1:
                return side
        return None

    @property
    def length(self) -> float:
        """Total route length (m)."""
        return float(self.cum[-1])

    def element_at(self, s: float) -> int:
        """Index into `edges` of the element the ego is on at route arc length s."""
        switch = self.start_s if self.switch_s is None else self.switch_s
        return min(max(bisect.bisect_right(switch, s) - 1, 0), len(self.edges) - 1)

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
        seg_len = np.maximum(detmath.norm_rows(seg), 1e-9)
        t = np.clip(detmath.dot(xy - a, seg) / seg_len ** 2, 0.0, 1.0)
        d = detmath.norm_rows(a + t[:, None] * seg - xy)
        k = int(np.argmin(d))
        cross = seg[k, 0] * (xy[1] - a[k, 1]) - seg[k, 1] * (xy[0] - a[k, 0])
        return float(self.cum[lo + k] + t[k] * seg_len[k]), float(np.sign(cross) * d[k])


def random_route(graph: LaneGraph, rng: np.random.Generator, start_edge: int, min_length_m: float) -> Route:
    """Random drive through the grid from `start_edge` until the route is at least `min_length_m` long.

    At each intersection a turn is taken with probability 0.4, and always after two straight crossings, so routes
    contain turns; where the wanted movement leaves from the neighbour lane (multi-lane streets), or now and then
    at random, the route changes lane first. Connectors are followed into their unique exit lane.
    """
    edges, since_turn = [start_edge], 0
    total = float(graph.length[start_edge])
    while total < min_length_m:
        last = edges[-1]
        if graph.is_connector[last]:
            edges.append(int(graph.successors[last][0]))
            total += float(graph.length[edges[-1]])
            continue
        lane, conn, turned = _next_movement(graph, rng, last, since_turn)
        since_turn = 0 if turned else since_turn + 1
        if lane != last and (len(edges) > 1 or graph.length[last] >= 45.0):  # room after the ego's start (s = 5)
            edges.append(lane)
        elif lane != last:
            conn = _pick(graph, rng, last, turned)
        edges.append(conn)
        total += float(graph.length[conn])
    return make_route(graph, edges)


def _pick(graph: LaneGraph, rng: np.random.Generator, lane: int, turn: bool) -> int:
    """A connector out of `lane`: a turning one if `turn` and one exists, else a straight one (or any)."""
    succ = graph.successors[lane]
    pool = [c for c in succ if (graph.turn[c] != "straight") == turn] or list(succ)
    return int(pool[int(rng.integers(len(pool)))])


def _next_movement(graph: LaneGraph, rng: np.random.Generator, lane: int, since_turn: int) -> tuple[int, int, bool]:
    """(lane to leave from, connector, whether it turns) for the next intersection."""
    want_turn = since_turn >= 2 or rng.random() < 0.4
    lanes = [lane] + parallel_lanes(graph, lane)
    options = [(ln, c) for ln in lanes for c in graph.successors[ln] if (graph.turn[c] != "straight") == want_turn]
    if not options:
        want_turn = not want_turn
        options = [(ln, c) for ln in lanes for c in graph.successors[ln]
                   if (graph.turn[c] != "straight") == want_turn]
    own = [o for o in options if o[0] == lane]
    other = [o for o in options if o[0] != lane]
    pool = other if other and (not own or rng.random() < LANE_CHANGE_P) else own
    ln, c = pool[int(rng.integers(len(pool)))]
    return ln, c, want_turn


def parallel_lanes(graph: LaneGraph, lane: int) -> list[int]:
    """Other lanes of the same lane group (same street and direction) as `lane`."""
    same = np.flatnonzero((graph.group_fid == graph.group_fid[lane]) & ~graph.is_connector)
    return [int(e) for e in same if e != lane]


def make_route(graph: LaneGraph, edges: list[int]) -> Route:
    """Concatenate the centrelines of consecutive edges (shared junction points kept once); two consecutive
    parallel lanes are a lane change, blended over LANE_CHANGE_M ending 12 m before the lane's end."""
    lines, start_s, switch_s, changes, s0 = [], [], [], [], 0.0
    for i, e in enumerate(edges):
        if i > 0 and not graph.is_connector[e] and not graph.is_connector[edges[i - 1]]:  # lane change into e
            lines[-1], a, b, side = _blend(lines[-1], graph.polyline(e), float(graph.length[e]))
            start_s.append(start_s[-1])
            switch_s.append(start_s[-1] + (a + b) / 2)
            changes.append((start_s[-1] + a, start_s[-1] + b, side))
            continue
        lines.append(graph.polyline(e))
        start_s.append(s0)
        switch_s.append(s0)
        s0 += float(graph.length[e])
    pts = np.concatenate([line if i == 0 else line[1:] for i, line in enumerate(lines)])
    cum = np.concatenate([[0.0], np.cumsum(detmath.norm_rows(np.diff(pts, axis=0)))])
    return Route(tuple(edges), np.array(start_s), pts, cum, np.array(switch_s), tuple(changes))


def _blend(line_a: np.ndarray, line_b: np.ndarray, length: float) -> tuple[np.ndarray, float, float, str]:
    """Centreline that follows lane a, moves over to the parallel lane b on a smoothstep and follows b; the edge
    arc lengths (a, b) where the manoeuvre starts and ends and its direction."""
    s_a = np.concatenate([[0.0], np.cumsum(detmath.norm_rows(np.diff(line_a, axis=0)))])
    end = max(length - 12.0, min(length, 10.0 + LANE_CHANGE_M))
    start = max(end - LANE_CHANGE_M, 2.0)
    s_b = np.concatenate([[0.0], np.cumsum(detmath.norm_rows(np.diff(line_b, axis=0)))])
    grid = np.append(np.arange(0.0, min(s_a[-1], s_b[-1]) - 0.5, 1.0), min(s_a[-1], s_b[-1]))
    a = np.stack([np.interp(grid, s_a, line_a[:, k]) for k in (0, 1)], axis=1)
    b = np.stack([np.interp(grid, s_b, line_b[:, k]) for k in (0, 1)], axis=1)
    w = np.clip((grid - start) / max(end - start, 1e-6), 0.0, 1.0)
    w = w * w * (3 - 2 * w)
    heading = a[min(1, len(a) - 1)] - a[0]
    offset = b[0] - a[0]
    side = "left" if heading[0] * offset[1] - heading[1] * offset[0] > 0 else "right"
    return a + w[:, None] * (b - a), float(start), float(end), side


def lane_change_safe(v: float, v0: float, lead: tuple[float, float] | None,
                     lag: tuple[float, float, float] | None) -> bool:
    """Whether the target lane has a safe gap (MOBIL's safety criterion with the traffic's IDM) for an ego at speed
    v (m/s, desired speed v0): `lead` (bumper gap m, speed m/s) to the nearest agent ahead in the target lane and
    `lag` (bumper gap m, speed m/s, desired speed m/s) to the nearest one behind (None: none). Both gaps must be at
    least LANE_CHANGE_MIN_GAP_M (bodies alongside give negative gaps), and neither the ego behind its new leader nor
    the new follower behind the ego may need to brake harder than LANE_CHANGE_SAFE_DECEL, so a fast closing follower
    needs a long gap and a slow one a short one."""
    if lead is not None:
        if lead[0] < LANE_CHANGE_MIN_GAP_M or idm_accel(v, v0, lead[0], lead[1], TRAFFIC_IDM) < -LANE_CHANGE_SAFE_DECEL:
            return False
    if lag is not None:
        follower_acc = idm_accel(lag[1], lag[2], lag[0], v, TRAFFIC_IDM)
        if lag[0] < LANE_CHANGE_MIN_GAP_M or follower_acc < -LANE_CHANGE_SAFE_DECEL:
            return False
    return True


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
        c, s = detmath.cos(state.yaw), detmath.sin(state.yaw)
        lx, ly = c * dx + s * dy, -s * dx + c * dy
        curvature = 2.0 * ly / max(lx * lx + ly * ly, 1e-6)
        return float(np.clip(detmath.arctan(WHEELBASE_M * curvature), -MAX_STEER_RAD, MAX_STEER_RAD))
