"""Traffic of the synthetic world: signal timing, lane-following vehicles and bicycles (IDM), pedestrians on
crosswalks and walkways, and static objects on the road shoulder.

Vehicles and bicycles ("movers") live on the lane graph as (edge, s): s is the arc length (m) of the box centre
along the edge centreline. Each mover knows its next edge (a random successor drawn when it enters an edge) and
keeps its gap with IDM against the nearest agent ahead on its current, next and next-but-one edge. Intersections run
two signal phases (`drivepipe.world.signals`); a mover also waits at the stop line while a mover (or the ego) is on a
connector that crosses or merges with the one it is about to take (turning traffic yields).

Pedestrians walk back and forth on one straight path each (a walkway centreline or a crosswalk). A crosswalk is
started only while its arm's light is red for long enough and no vehicle is on or approaching it; vehicles yield to
pedestrians on the carriageway ahead of them, and pedestrians yield to a vehicle body across their path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drivepipe.idm import IdmParams, idm_accel
from drivepipe.utils import detmath
from drivepipe.world.population import (
    BICYCLE_TYPES,
    PEDESTRIAN_TYPES,
    VEHICLE_TYPES,
    draw_sizes,
    parked_cars,
    static_sizes,
)
from drivepipe.world.roads import STOP_SETBACK_M, WALKWAY_WIDTH_M, City, PedPath
from drivepipe.world.signals import (
    GREEN,
    RED,
    STATUS_NAMES,
    UNKNOWN,
    YELLOW,
    TrafficLights,
    connector_conflicts,
    must_stop,
)
from drivepipe.world_state import ActorState

__all__ = ["GREEN", "RED", "STATUS_NAMES", "UNKNOWN", "YELLOW", "TrafficLights", "must_stop"]

MAX_BRAKE = 8.0            # m/s^2, emergency deceleration limit
# the traffic's IDM: free-road term >= -3 (a car far above its desired speed brakes at most 4 a), >= -MAX_BRAKE
TRAFFIC_IDM = IdmParams(accel_mps2=1.5, decel_mps2=2.0, min_gap_m=2.0, headway_s=1.2, free_floor=-3.0,
                        max_brake_mps2=MAX_BRAKE)
STOP_LINE_CLEARANCE = 0.5  # m, front bumper to stop point at standstill
JAYWALK_EVERY = 8         # one pedestrian in this many crosses mid-block between parked cars
STATIC_CATEGORIES = ("traffic_cone", "barrier", "czone_sign", "generic_object")


@dataclass(frozen=True)
class EgoObstacle:
    """The ego as other agents see it: box centre on the lane graph (edge, s m) and in UTM (xy, m), speed (m/s),
    box length and width (m)."""

    edge: int
    s: float
    v: float
    length: float
    xy: np.ndarray
    width: float = 2.3


class Traffic:
    """All non-ego actors. Track ids are 1..N in the order vehicles, bicycles, pedestrians, statics (parked cars
    first)."""

    def __init__(self, city: City, rng: np.random.Generator, counts: dict[str, int], ego_edge: int,
                 ego_s: float, route_edges: set[int], parked_fill: float = 0.0) -> None:
        self.city, self.graph, self.rng = city, city.graph, rng
        self.hw = city.lanes_per_direction * 3.5
        self.conflicts = connector_conflicts(self.graph)
        n_veh, n_bic = counts["vehicle"], counts["bicycle"]
        self._spawn_movers(n_veh, n_bic, ego_edge, ego_s)
        self._spawn_pedestrians(counts["pedestrian"])
        self._spawn_statics(counts["static"], route_edges, parked_fill)

    # ------------------------------------------------------------------------------------------------ spawning
    def _spawn_movers(self, n_veh: int, n_bic: int, ego_edge: int, ego_s: float) -> None:
        """Vehicles and bicycles (outer lanes) on distinct lane slots 15 m apart, clear of the ego's start."""
        g = self.graph
        slots = [(e, s) for e in np.flatnonzero(~g.is_connector) for s in np.arange(9.0, g.length[e] - 9.0, 15.0)
                 if not (e == ego_edge and -20.0 < s - ego_s < 35.0)]
        outer = [i for i, (e, _) in enumerate(slots) if g.outer[e]]
        bic_idx = list(self.rng.choice(outer, size=min(n_bic, len(outer)), replace=False)) if n_bic else []
        rest = [i for i in range(len(slots)) if i not in set(bic_idx)]
        veh_idx = list(self.rng.choice(rest, size=min(n_veh, len(rest)), replace=False)) if n_veh else []
        chosen = [slots[i] for i in veh_idx + bic_idx]
        self.cat = ["vehicle"] * len(veh_idx) + ["bicycle"] * len(bic_idx)
        self.edge = np.array([c[0] for c in chosen], dtype=np.int64)
        self.s = np.array([c[1] for c in chosen], dtype=float)
        self.size = np.concatenate([draw_sizes(self.rng, VEHICLE_TYPES, len(veh_idx)),
                                    draw_sizes(self.rng, BICYCLE_TYPES, len(bic_idx))])
        self.v_des = np.concatenate([self.rng.uniform(8.0, 12.0, len(veh_idx)), self.rng.uniform(4.0, 6.0, len(bic_idx))])
        self.nxt = np.array([self._choose(e) for e in self.edge], dtype=np.int64)
        self.tid = np.arange(1, len(chosen) + 1)
        self.acc = np.zeros(len(chosen))
        # safe initial speed: able to stop at 2.5 m/s^2 behind the leader on the lane, or else at the stop line
        gap = g.length[self.edge] - STOP_SETBACK_M - self.s - self.size[:, 0] / 2
        for i in range(len(chosen)):
            ahead = (self.edge == self.edge[i]) & (self.s > self.s[i])
            if ahead.any():
                j = np.flatnonzero(ahead)[np.argmin(self.s[ahead])]
                gap[i] = self.s[j] - self.s[i] - (self.size[i, 0] + self.size[j, 0]) / 2
        self.v = np.minimum(self.v_des * self.rng.uniform(0.5, 1.0, len(chosen)),
                            np.sqrt(2.0 * 2.5 * np.clip(gap - 2.0, 0.0, None)))

    def _choose(self, e: int) -> int:
        """A random successor edge of edge e (the route a mover takes out of e)."""
        succ = self.graph.successors[e]
        return int(succ[self.rng.integers(len(succ))])

    def _mid_block_crossings(self, n: int) -> list[PedPath]:
        """n straight paths across the street away from intersections, kerb to kerb (walkway edge to walkway edge),
        each at a random point of a random walkway long enough; parked cars leave a gap there."""
        out, walks = [], [w for w in self.city.walkway_paths if detmath.norm(w.end - w.start) >= 30.0]
        for k in self.rng.choice(len(walks), size=n if walks else 0, replace=True).tolist():
            w = walks[k]
            t = (w.end - w.start) / detmath.norm(w.end - w.start)
            to_road = np.array([t[1], -t[0]])  # walkway paths have the road on their right
            centre = w.start + t * self.rng.uniform(0.3, 0.7) * detmath.norm(w.end - w.start)
            across = 2 * (self.hw + WALKWAY_WIDTH_M / 2)
            out.append(PedPath(-1, centre + to_road * 1.0, centre + to_road * (across - 1.0)))
        return out

    def _spawn_pedestrians(self, n: int) -> None:
        """Half on crosswalks (waiting at a curb), one in JAYWALK_EVERY crossing mid-block between parked cars, the
        rest on walkways; <= 3 per path in distinct lateral slots."""
        n_cw = (n + 1) // 2
        self.crossings = self._mid_block_crossings(n // JAYWALK_EVERY)
        paths = self.city.crosswalk_paths + self.city.walkway_paths + self.crossings
        picks = list(self.rng.choice(len(self.city.crosswalk_paths), n_cw, replace=True))
        n_walk = n - n_cw - len(self.crossings)
        picks += list(len(self.city.crosswalk_paths) + self.rng.choice(len(self.city.walkway_paths), n_walk))
        picks += list(len(paths) - len(self.crossings) + np.arange(len(self.crossings)))
        used: dict[int, int] = {}
        self.p_path, self.p_lat = [], []
        for p in picks:
            while used.get(p, 0) >= (1 if paths[p].fid < 0 else 3):
                p = (p + 1) % len(paths)
            # m left of the path; walkway slots keep clear of the kerb (parked cars, waiting crosswalk pedestrians)
            slots = (-0.8, 0.8, 0.0) if paths[p].intersection >= 0 or paths[p].fid < 0 else (0.55, 1.0, 1.4)
            self.p_lat.append(slots[used.get(p, 0)])
            used[p] = used.get(p, 0) + 1
            self.p_path.append(paths[p])
        lens = np.array([detmath.norm(pp.end - pp.start) for pp in self.p_path])
        self.p_len = lens
        self.p_start = np.array([pp.start for pp in self.p_path]).reshape(n, 2)
        self.p_t = (np.array([pp.end for pp in self.p_path]).reshape(n, 2) - self.p_start) / np.maximum(lens, 1e-9)[:, None]
        self.p_jay = np.array([pp.fid < 0 for pp in self.p_path], dtype=bool)  # mid-block, no signal
        self.p_is_cw = is_cw = np.array([pp.intersection >= 0 for pp in self.p_path], dtype=bool) | self.p_jay
        self.p_u = np.where(is_cw, self.rng.choice([0.0, 1.0], n) * lens, self.rng.uniform(0.1, 0.9, n) * lens)
        self.p_dir = np.where(self.p_u > lens / 2, -1.0, 1.0) if n else np.zeros(0)
        self.p_v = np.zeros(n)
        self.p_walk = self.rng.uniform(1.1, 1.5, n)
        self.p_moving = ~is_cw
        self.p_wait = self.rng.uniform(0.0, 3.0, n)
        self.p_size = draw_sizes(self.rng, PEDESTRIAN_TYPES, n)
        self.p_tid = len(self.tid) + 1 + np.arange(n)

    def _spawn_statics(self, n: int, route_edges: set[int], parked_fill: float) -> None:
        """Parked cars along the kerbs, then objects just over the outer lane edge, away from crosswalks and parked
        cars; big ones never beside the ego route."""
        g, w = self.graph, 3.5
        side = 1.0 if self.city.left_hand else -1.0
        clear = [p for c in self.crossings for p in (c.start, c.end)]
        poses, sizes = parked_cars(g, self.rng, parked_fill, self.city.left_hand, clear)
        self.st_cat = ["vehicle"] * len(poses)
        self.st_pose, self.st_size = [p for p in poses], [z for z in sizes]
        taken = [(p[:2], z[0] / 2 + 1.5) for p, z in zip(poses, sizes)]  # (centre, keep-out radius m)
        outer = np.flatnonzero(g.outer & ~g.is_connector)
        tries, placed = 0, 0
        while placed < n and tries < 50 * (n + 1):
            tries += 1
            cat = str(self.rng.choice(STATIC_CATEGORIES, p=[0.4, 0.2, 0.2, 0.2]))
            e = int(self.rng.choice(outer))
            if cat in ("barrier", "generic_object") and e in route_edges:
                continue
            size = static_sizes(self.rng, cat, 1)[0]
            s = self.rng.uniform(10.0, g.length[e] - 10.0)
            x, y, h = (float(a[0]) for a in g.pose_at(np.array([e]), np.array([s])))
            intrusion = max(0.15, size[1] - 0.25)  # m into the lane; the outer face stays <= 0.25 m past the edge
            lat = side * (w / 2 + size[1] / 2 - intrusion)
            xy = np.array([x - detmath.sin(h) * lat, y + detmath.cos(h) * lat])
            if any(detmath.norm(xy - c) < r + size[0] / 2 for c, r in taken):
                continue
            taken.append((xy, 1.5))
            placed += 1
            self.st_cat.append(cat)
            self.st_size.append(size)
            self.st_pose.append(np.array([xy[0], xy[1], h + self.rng.normal(0.0, 0.05)]))
        self.st_tid = len(self.tid) + len(self.p_tid) + 1 + np.arange(len(self.st_cat))

    # ------------------------------------------------------------------------------------------------ dynamics
    def step(self, dt: float, t_s: float, lights: TrafficLights, codes: np.ndarray,
             ego: EgoObstacle | None) -> None:
        """Advance movers and pedestrians by dt (s). `codes` = lights.codes(t_s); ego None = ignore the ego."""
        if len(self.edge):
            self._step_movers(dt, codes, ego)
        if len(self.p_u):
            self._step_pedestrians(dt, t_s, lights, codes, ego)

    def busy_connectors(self, ego: EgoObstacle | None) -> set[int]:
        """Connector edges with an agent (mover or the ego) on them now, plus the next connector of every mover too
        close to its stop line to stop comfortably (it is committed to enter)."""
        g = self.graph
        edges = self.edge.tolist() + ([ego.edge] if ego is not None else [])
        busy = {int(e) for e in edges if g.is_connector[e]}
        gap = g.length[self.edge] - STOP_SETBACK_M - self.s - self.size[:, 0] / 2
        committed = ~g.is_connector[self.edge] & (gap > -0.5) & (gap <= self.v ** 2 / 12.0) & (self.v > 0.5)
        return busy | {int(e) for e in self.nxt[committed]}

    def conflicted(self, connector: int, busy: set[int]) -> bool:
        """Whether a connector that crosses or merges with `connector` is occupied."""
        return bool(self.conflicts.get(int(connector), frozenset()) & busy)

    def _leaders(self, ego: EgoObstacle | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bumper gap (m), speed (m/s) and index (-1 ego, -2 none) of each mover's leader along its path."""
        g = self.graph
        edges, s, v, length = self.edge.tolist(), self.s.tolist(), self.v.tolist(), self.size[:, 0].tolist()
        occ: dict[int, list[tuple[float, float, float, int]]] = {}
        for i, e in enumerate(edges):
            occ.setdefault(e, []).append((s[i], v[i], length[i], i))
        if ego is not None:
            occ.setdefault(ego.edge, []).append((ego.s, ego.v, ego.length, -1))
        gap, v_lead, who = np.full(len(edges), np.inf), np.zeros(len(edges)), np.full(len(edges), -2)
        for i, nxt in enumerate(self.nxt.tolist()):
            path = [edges[i], nxt] + ([g.successors[nxt][0]] if g.is_connector[nxt] else [])
            base = -s[i]
            for depth, e in enumerate(path):
                ahead = [o for o in occ.get(e, ()) if o[3] != i and (depth > 0 or o[0] > s[i])]
                if ahead:
                    o = min(ahead)
                    gap[i] = base + o[0] - (o[2] + length[i]) / 2
                    v_lead[i], who[i] = o[1], o[3]
                    break
                base += g.length[e]
        return gap, v_lead, who

    def _stop_gaps(self, codes: np.ndarray, busy: set[int]) -> np.ndarray:
        """Gap (m) to a virtual standing obstacle at the stop line where the mover must wait, else inf."""
        g = self.graph
        out = np.full(len(self.edge), np.inf)
        for i, e in enumerate(self.edge):
            if g.is_connector[e]:
                continue
            d = g.length[e] - STOP_SETBACK_M - self.s[i] - self.size[i, 0] / 2
            if must_stop(codes[g.intersection[e], g.arm[e]], d, self.v[i], self.conflicted(self.nxt[i], busy)):
                out[i] = d - STOP_LINE_CLEARANCE + 2.0  # IDM keeps s0 = 2 m to a standing obstacle
        return out

    def _pedestrian_gaps(self, xy: np.ndarray, heading: np.ndarray) -> np.ndarray:
        """Gap (m) from each mover's front to the nearest pedestrian on the road in its corridor, else inf."""
        peds = self.road_pedestrians()
        if not len(peds):
            return np.full(len(xy), np.inf)
        rel = peds[None, :, :] - xy[:, None, :]
        c, s = detmath.cos(heading)[:, None], detmath.sin(heading)[:, None]
        fwd, lat = rel[..., 0] * c + rel[..., 1] * s, -rel[..., 0] * s + rel[..., 1] * c
        # pedestrians beside the body are not obstacles (they wait for the vehicle to pass; no deadlock)
        hit = (fwd > self.size[:, 0:1] / 2 - 0.3) & (fwd < 25.0) & (np.abs(lat) < self.size[:, 1:2] / 2 + 0.9)
        d = np.where(hit, fwd - self.size[:, 0:1] / 2 - 0.3, np.inf).min(axis=1)
        return d

    def _step_movers(self, dt: float, codes: np.ndarray, ego: EgoObstacle | None) -> None:
        """IDM against leader, stop line and road pedestrians; trapezoidal integration of s; edge hand-over."""
        g = self.graph
        gap, v_lead, _ = self._leaders(ego)
        stop = self._stop_gaps(codes, self.busy_connectors(ego))
        x, y, h = g.pose_at(self.edge, self.s)
        ped = self._pedestrian_gaps(np.stack([x, y], 1), h)
        d_next = g.length[self.edge] - self.s
        v0 = np.minimum.reduce([self.v_des, g.curve_speed[self.edge],
                                np.sqrt(g.curve_speed[self.nxt] ** 2 + 2.0 * 1.5 * np.maximum(d_next, 0.0))])
        acc = np.minimum.reduce([idm_accel(self.v, v0, gap, v_lead, TRAFFIC_IDM),
                                 idm_accel(self.v, v0, stop, 0.0, TRAFFIC_IDM),
                                 idm_accel(self.v, v0, ped + 2.0, 0.0, TRAFFIC_IDM)])
        v_new = np.maximum(self.v + acc * dt, 0.0)
        self.acc = (v_new - self.v) / dt
        self.s = self.s + 0.5 * (self.v + v_new) * dt
        self.v = v_new
        for i in np.flatnonzero(self.s > g.length[self.edge]):
            while self.s[i] > g.length[self.edge[i]]:
                self.s[i] -= g.length[self.edge[i]]
                self.edge[i] = self.nxt[i]
                self.nxt[i] = self._choose(int(self.edge[i]))

    def _ped_may_cross(self, i: int, t_s: float, lights: TrafficLights, codes: np.ndarray,
                       ego: EgoObstacle | None) -> bool:
        """A crosswalk pedestrian starts only while its arm is red long enough and no mover is close; a mid-block
        one only when no mover is within 30 m."""
        pp = self.p_path[i]
        if not self.p_jay[i] and codes[pp.intersection, pp.arm] != RED:
            return False
        if not self.p_jay[i] and lights.time_to_green(t_s, pp.intersection, pp.arm) < self.p_len[i] / self.p_walk[i] + 3.0:
            return False
        reach = 30.0 if self.p_jay[i] else 12.0
        xy, length, _, v = self._vehicle_boxes(ego)
        seg = pp.end - pp.start
        t = np.clip(detmath.dot(xy - pp.start, seg) / detmath.dot(seg, seg), 0.0, 1.0)
        on_crossing = detmath.norm_rows(xy - pp.start - t[:, None] * seg) < length / 2 + 1.5
        approaching = (detmath.norm_rows(xy - (pp.start + pp.end) / 2) < reach) & (v > 0.5)
        return not np.any(on_crossing | approaching)

    def _vehicle_boxes(self, ego: EgoObstacle | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Centres (M, 2) m, lengths, widths (M,) m and speeds (M,) m/s of movers plus the ego if given."""
        x, y, _ = self.graph.pose_at(self.edge, self.s)
        xy, length, width, v = np.stack([x, y], axis=1), self.size[:, 0], self.size[:, 1], self.v
        if ego is None:
            return xy, length, width, v
        return (np.vstack([xy, ego.xy[None]]), np.append(length, ego.length), np.append(width, ego.width),
                np.append(v, ego.v))

    def _ped_clearance(self, i: int, boxes: tuple[np.ndarray, ...]) -> float:
        """Distance (m) crosswalk pedestrian i may still walk before a vehicle body across its path ahead."""
        xy, length, _, _ = boxes
        ped_xy = self.p_start[i] + self.p_t[i] * self.p_u[i]
        fwd_dir = self.p_t[i] * self.p_dir[i]
        rel = xy - ped_xy
        along, across = detmath.dot(rel, fwd_dir), detmath.dot(rel, np.array([-fwd_dir[1], fwd_dir[0]]))
        hit = (np.abs(across) < length / 2 + 0.4) & (along > -0.3) & (along < length / 2 + 4.0)
        return float(np.maximum(along[hit] - length[hit] / 2 - 0.5, 0.0).min()) if hit.any() else np.inf

    def _step_pedestrians(self, dt: float, t_s: float, lights: TrafficLights, codes: np.ndarray,
                          ego: EgoObstacle | None) -> None:
        """Wait (and check the crossing rule) or walk along the path with smooth start/stop; turn around at ends."""
        boxes = self._vehicle_boxes(ego)
        for i in range(len(self.p_u)):
            if not self.p_moving[i]:
                self.p_wait[i] -= dt
                cw = self.p_is_cw[i]
                if self.p_wait[i] <= 0 and (not cw or self._ped_may_cross(i, t_s, lights, codes, ego)):
                    self.p_moving[i] = True
                continue
            d_end = self.p_len[i] - self.p_u[i] if self.p_dir[i] > 0 else self.p_u[i]
            # accelerate at <= 1 m/s^2 to the walking speed; brake on a 0.8 m/s^2 profile to stop at the path end
            brake = (1.6 * max(d_end - self.p_v[i] * dt, 0.0)) ** 0.5
            if self.p_is_cw[i]:  # yield to a vehicle body across the crosswalk ahead
                brake = min(brake, (1.6 * max(self._ped_clearance(i, boxes) - self.p_v[i] * dt, 0.0)) ** 0.5)
            v_new = min(self.p_v[i] + 1.0 * dt, self.p_walk[i], brake)
            step = min(0.5 * (self.p_v[i] + v_new) * dt, d_end)
            self.p_u[i] += self.p_dir[i] * step
            self.p_v[i] = v_new
            if d_end - step < 0.03 and v_new < 0.08:  # arrived: turn around after a pause
                self.p_v[i], self.p_moving[i], self.p_dir[i] = 0.0, False, -self.p_dir[i]
                self.p_wait[i] = self.rng.uniform(1.0, 5.0)

    # ------------------------------------------------------------------------------------------------ outputs
    def pedestrian_xy_yaw_vel(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(P, 2) positions (m), (P,) yaw (rad), (P, 2) global velocity (m/s)."""
        t = self.p_t
        nrm = np.stack([-t[:, 1], t[:, 0]], axis=1)
        xy = self.p_start + t * self.p_u[:, None] + nrm * np.asarray(self.p_lat)[:, None]
        yaw = detmath.arctan2(t[:, 1] * self.p_dir, t[:, 0] * self.p_dir)
        return xy, yaw, t * (self.p_dir * self.p_v)[:, None]

    def on_road_mask(self) -> np.ndarray:
        """(P,) bool: pedestrian is on the carriageway part of a crosswalk (vehicles must yield)."""
        return self.p_is_cw & (np.abs(self.p_u - self.p_len / 2) < self.hw + 0.2)

    def road_pedestrians(self) -> np.ndarray:
        """(K, 2) positions of pedestrians currently on the carriageway part of a crosswalk."""
        xy, _, _ = self.pedestrian_xy_yaw_vel()
        return xy[self.on_road_mask()] if len(xy) else np.zeros((0, 2))

    def actor_states(self) -> tuple[ActorState, ...]:
        """All actors as ActorState (box centre z = height / 2, global velocity)."""
        x, y, h = self.graph.pose_at(self.edge, self.s)
        pxy, pyaw, pvel = self.pedestrian_xy_yaw_vel()
        n_st = len(self.st_cat)
        st_pose = np.array(self.st_pose).reshape(n_st, 3)
        cols = [np.concatenate(parts).tolist() for parts in (
            (x, pxy[:, 0], st_pose[:, 0]), (y, pxy[:, 1], st_pose[:, 1]), (h, pyaw, st_pose[:, 2]),
            (self.v * detmath.cos(h), pvel[:, 0], np.zeros(n_st)), (self.v * detmath.sin(h), pvel[:, 1], np.zeros(n_st)))]
        size = np.concatenate([self.size, self.p_size, np.array(self.st_size).reshape(n_st, 3)]).tolist()
        tids = np.concatenate([self.tid, self.p_tid, self.st_tid]).astype(int).tolist()
        cats = self.cat + ["pedestrian"] * len(self.p_u) + self.st_cat
        return tuple(ActorState(t, c, px, py, H / 2, yaw, L, W, H, vx, vy)
                     for t, c, px, py, yaw, vx, vy, (L, W, H) in zip(tids, cats, *cols, size))


