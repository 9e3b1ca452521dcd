"""Traffic of the synthetic world: signal timing, lane-following vehicles and bicycles (IDM), pedestrians on
crosswalks and walkways, and static objects (parked cars, work zones) at the kerbs.

Vehicles and bicycles ("movers") live on the lane graph as (edge, s): s is the arc length (m) of the box centre
along the edge centreline. Each mover knows its next edge (a random successor drawn when it enters an edge) and
keeps its gap with IDM against the nearest agent ahead on its current, next and next-but-one edge. Intersections run
two signal phases (`drivepipe.world.signals`); a mover also waits at the stop line while a mover (or the ego) is on a
connector that crosses or merges with the one it is about to take, or while one with the right of way is about to enter
such a connector (turning traffic yields to straight traffic, the turn across oncoming traffic to the kerb-side turn).

Pedestrians walk back and forth on one straight path each (a walkway centreline or a crosswalk). A crosswalk is
started only while its arm's light is red for long enough and no vehicle is on or approaching it; vehicles yield to
pedestrians on the carriageway ahead of them or about to step into their path (PED_ANTICIPATION_S), and pedestrians
yield to a vehicle body across their path (one they already touch does not stop them: they walk out of its way; one
that stays in their way for PED_GIVE_WAY_S sends them back to the kerb they came from).
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
    mid_block_crossings,
    parked_cars,
    pedestrian_paths,
    work_zones,
)
from drivepipe.world.roads import STOP_SETBACK_M, City
from drivepipe.world.signals import (
    GREEN,
    RED,
    STATUS_NAMES,
    UNKNOWN,
    YELLOW,
    TrafficLights,
    busy_connectors,
    claimed_connectors,
    conflict_ends,
    connector_conflicts,
    connector_shadows,
    connector_splits,
    movement_ranks,
    must_stop,
    outranked,
    ray_box,
)
from drivepipe.world_state import ActorState

__all__ = ["GREEN", "RED", "STATUS_NAMES", "UNKNOWN", "YELLOW", "TrafficLights", "must_stop"]

MAX_BRAKE = 8.0            # m/s^2, emergency deceleration limit
# the traffic's IDM: free-road term >= -3 (a car far above its desired speed brakes at most 4 a), >= -MAX_BRAKE
TRAFFIC_IDM = IdmParams(accel_mps2=1.5, decel_mps2=2.0, min_gap_m=2.0, headway_s=1.2, free_floor=-3.0,
                        max_brake_mps2=MAX_BRAKE)
STOP_LINE_CLEARANCE = 0.5  # m, front bumper to stop point at standstill
JAYWALK_EVERY = 8         # one pedestrian in this many crosses mid-block between parked cars
PED_ANTICIPATION_S = 2.0  # s: vehicles also yield to where a walking crosswalk pedestrian will be this much later
PED_RADIUS_M = 0.3        # m, a pedestrian's body around its centre when it checks for vehicle bodies in its path
PED_GIVE_WAY_S = 3.0      # s blocked by a vehicle body on the crosswalk after which a pedestrian walks back


@dataclass(frozen=True)
class EgoObstacle:
    """The ego as other agents see it: box centre on the lane graph (edge, s m) and in UTM (xy, m), speed (m/s),
    box length and width (m), heading (rad), the connector it takes next from its lane (-1: none / on one) and, during
    a lane change, (edge, s m) of the other lane its body covers."""

    edge: int
    s: float
    v: float
    length: float
    xy: np.ndarray
    width: float = 2.3
    yaw: float = 0.0
    next_edge: int = -1
    also: tuple[tuple[int, float], ...] = ()


class Traffic:
    """All non-ego actors. Track ids are 1..N in the order vehicles, bicycles, pedestrians, statics (parked cars
    first)."""

    def __init__(self, city: City, rng: np.random.Generator, counts: dict[str, int], ego_edge: int,
                 ego_s: float, zone_lanes: list[int] = (), parked_fill: float = 0.0) -> None:
        self.city, self.graph, self.rng = city, city.graph, rng
        self.hw = city.lanes_per_direction * 3.5
        self.conflicts, self._conflict_ends = connector_conflicts(self.graph), conflict_ends(self.graph)
        self.ranks = movement_ranks(self.graph, city.left_hand)
        self._pred = {int(c): int(e) for e in np.flatnonzero(~self.graph.is_connector)
                      for c in self.graph.successors[e]}  # connector -> the lane it leaves
        self._splits = connector_splits(self.graph)
        n_veh, n_bic = counts["vehicle"], counts["bicycle"]
        self._spawn_movers(n_veh, n_bic, ego_edge, ego_s)
        self._spawn_pedestrians(counts["pedestrian"])
        self._spawn_statics(counts["static"], list(zone_lanes), parked_fill)

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

    def _spawn_pedestrians(self, n: int) -> None:
        """`population.pedestrian_paths` (one in JAYWALK_EVERY crossing mid-block between parked cars); crosswalk
        pedestrians start waiting at a kerb, the others walking."""
        self.crossings = mid_block_crossings(self.city, self.rng, n // JAYWALK_EVERY, self.hw)
        self.p_path, self.p_lat = pedestrian_paths(self.city, self.rng, n, self.crossings)
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
        self.p_blocked = np.zeros(n)  # s a crosswalk pedestrian has stood blocked by a vehicle body
        self.p_size = draw_sizes(self.rng, PEDESTRIAN_TYPES, n)
        self.p_tid = len(self.tid) + 1 + np.arange(n)

    def _spawn_statics(self, n: int, zone_lanes: list[int], parked_fill: float) -> None:
        """Work zones (`population.work_zones`: n cones, signs, barriers, equipment; kerb lanes `zone_lanes` first),
        then parked cars along the kerbs (behind the cone lines in the zones) outside the mid-block crossings; parked
        cars come first in the track order."""
        clear = [p for c in self.crossings for p in (c.start, c.end)]
        cats, z_poses, z_sizes, stretches = work_zones(self.graph, self.rng, n, zone_lanes, self.city.left_hand,
                                                       clear)
        kerb_objects = [p[:2] for c, p in zip(cats, z_poses) if c != "traffic_cone"]
        poses, sizes = parked_cars(self.graph, self.rng, parked_fill, self.city.left_hand, clear, stretches,
                                   kerb_objects)
        self.st_cat = ["vehicle"] * len(poses) + cats
        self.st_pose = [p for p in poses] + [p for p in z_poses]
        self.st_size = [z for z in sizes] + [z for z in z_sizes]
        self.st_tid = len(self.tid) + len(self.p_tid) + 1 + np.arange(len(self.st_cat))

    # ------------------------------------------------------------------------------------------------ dynamics
    def step(self, dt: float, t_s: float, lights: TrafficLights, codes: np.ndarray,
             ego: EgoObstacle | None) -> None:
        """Advance movers and pedestrians by dt (s). `codes` = lights.codes(t_s); ego None = ignore the ego."""
        if len(self.edge):
            self._step_movers(dt, codes, lights.since_yellow(t_s), ego)
        if len(self.p_u):
            self._step_pedestrians(dt, t_s, lights, codes, ego)

    def _agents(self, ego: EgoObstacle | None) -> tuple[np.ndarray, ...]:
        """Edge, s (m), speed (m/s), length (m) and next edge of every mover, plus the ego's (next edge -1 unless it
        is on a lane before a connector) if given."""
        out = (self.edge, self.s, self.v, self.size[:, 0], self.nxt)
        if ego is None:
            return out
        return tuple(np.append(a, b) for a, b in zip(out, (ego.edge, ego.s, ego.v, ego.length, ego.next_edge)))

    def busy_connectors(self, ego: EgoObstacle | None) -> dict[int, float]:
        """`signals.busy_connectors` of the movers plus the ego if given."""
        return busy_connectors(self.graph, *self._agents(ego))

    def claims(self, codes: np.ndarray, ego: EgoObstacle | None) -> dict[int, int]:
        """`signals.claimed_connectors` of the movers plus the ego if given."""
        return claimed_connectors(self.graph, self.ranks, codes, *self._agents(ego))

    def conflicted(self, connector: int, busy: dict[int, float]) -> bool:
        """Whether an agent is on (or committed to) a connector that crosses or merges with `connector` and has not
        yet cleared the part of it within reach of `connector` (`conflict_ends`)."""
        c = int(connector)
        return any(busy.get(b, np.inf) < self._conflict_ends[(c, b)] for b in self.conflicts.get(c, ()))

    def must_yield(self, connector: int, busy: dict[int, float], claims: dict[int, int]) -> bool:
        """Whether an agent about to take `connector` must wait: a conflicting connector is occupied or claimed by an
        agent with the right of way."""
        return self.conflicted(connector, busy) or outranked(connector, claims, self.conflicts, self.ranks)

    def shadows(self, edge: int, s: float, length: float) -> list[tuple[int, float]]:
        """`signals.connector_shadows` of a body of `length` m centred at s (m) on `edge`."""
        return connector_shadows(self.graph, self._splits, self._pred, edge, s, length)

    def _leaders(self, ego: EgoObstacle | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bumper gap (m), speed (m/s) and index (-1 ego, -2 none) of each mover's leader along its path."""
        g = self.graph
        edges, s, v, length = self.edge.tolist(), self.s.tolist(), self.v.tolist(), self.size[:, 0].tolist()
        occ: dict[int, list[tuple[float, float, float, int]]] = {}
        entries = [(e, s[i], v[i], length[i], i) for i, e in enumerate(edges)]
        if ego is not None:
            entries += [(e, s_e, ego.v, ego.length, -1) for e, s_e in ((ego.edge, ego.s), *ego.also)]
        for e, s_e, v_e, len_e, who_e in entries:
            for e2, s2 in [(e, s_e), *self.shadows(e, s_e, len_e)]:
                occ.setdefault(e2, []).append((s2, v_e, len_e, who_e))
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

    def _stop_gaps(self, codes: np.ndarray, since_yellow: np.ndarray, busy: dict[int, float], claims: dict[int, int]
                   ) -> np.ndarray:
        """Gap (m) to a virtual standing obstacle at the stop line where the mover must wait, else inf
        (`since_yellow`: `TrafficLights.since_yellow` now)."""
        g = self.graph
        out = np.full(len(self.edge), np.inf)
        for i, e in enumerate(self.edge):
            if g.is_connector[e]:
                continue
            d = g.length[e] - STOP_SETBACK_M - self.s[i] - self.size[i, 0] / 2
            clear_s = float(since_yellow[g.intersection[e], g.arm[e]]) if self.ranks[self.nxt[i]] < 2 else np.inf
            if must_stop(codes[g.intersection[e], g.arm[e]], d, self.v[i], self.must_yield(self.nxt[i], busy, claims),
                         clear_s):
                out[i] = d - STOP_LINE_CLEARANCE + 2.0  # IDM keeps s0 = 2 m to a standing obstacle
        return out

    def _pedestrian_gaps(self, xy: np.ndarray, heading: np.ndarray) -> np.ndarray:
        """Gap (m) from each mover's front to the nearest pedestrian on the road in its corridor (now or
        PED_ANTICIPATION_S later), else inf."""
        peds = self.road_pedestrians(PED_ANTICIPATION_S)
        if not len(peds):
            return np.full(len(xy), np.inf)
        rel = peds[None, :, :] - xy[:, None, :]
        c, s = detmath.cos(heading)[:, None], detmath.sin(heading)[:, None]
        fwd, lat = rel[..., 0] * c + rel[..., 1] * s, -rel[..., 0] * s + rel[..., 1] * c
        # pedestrians beside the body are not obstacles (they wait for the vehicle to pass; no deadlock)
        hit = (fwd > self.size[:, 0:1] / 2 - 0.3) & (fwd < 25.0) & (np.abs(lat) < self.size[:, 1:2] / 2 + 0.9)
        d = np.where(hit, fwd - self.size[:, 0:1] / 2 - 0.3, np.inf).min(axis=1)
        return d

    def _step_movers(self, dt: float, codes: np.ndarray, since_yellow: np.ndarray, ego: EgoObstacle | None
                     ) -> None:
        """IDM against leader, stop line and road pedestrians; trapezoidal integration of s; edge hand-over."""
        g = self.graph
        gap, v_lead, _ = self._leaders(ego)
        stop = self._stop_gaps(codes, since_yellow, self.busy_connectors(ego), self.claims(codes, ego))
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
                       boxes: tuple[np.ndarray, ...]) -> bool:
        """A crosswalk pedestrian starts only while its arm is red long enough and no mover is close; a mid-block
        one only when no mover is within 30 m."""
        pp = self.p_path[i]
        if not self.p_jay[i] and codes[pp.intersection, pp.arm] != RED:
            return False
        if not self.p_jay[i] and lights.time_to_green(t_s, pp.intersection, pp.arm) < self.p_len[i] / self.p_walk[i] + 3.0:
            return False
        reach = 30.0 if self.p_jay[i] else 12.0
        xy, length, _, _, _, v = boxes
        seg = pp.end - pp.start
        t = np.clip(detmath.dot(xy - pp.start, seg) / detmath.dot(seg, seg), 0.0, 1.0)
        on_crossing = detmath.norm_rows(xy - pp.start - t[:, None] * seg) < length / 2 + 1.5
        approaching = (detmath.norm_rows(xy - (pp.start + pp.end) / 2) < reach) & (v > 0.5)
        return not np.any(on_crossing | approaching)

    def _vehicle_boxes(self, ego: EgoObstacle | None) -> tuple[np.ndarray, ...]:
        """Centres (M, 2) m, lengths, widths (M,) m, heading cosines and sines (M,) and speeds (M,) m/s of movers
        plus the ego if given."""
        x, y, h = self.graph.pose_at(self.edge, self.s)
        xy, length, width, v = np.stack([x, y], axis=1), self.size[:, 0], self.size[:, 1], self.v
        if ego is not None:
            xy, length = np.vstack([xy, ego.xy[None]]), np.append(length, ego.length)
            width = np.append(width, ego.width)
            h, v = np.append(h, ego.yaw), np.append(v, ego.v)
        return xy, length, width, detmath.cos(h), detmath.sin(h), v

    def _ped_clearance(self, i: int, boxes: tuple[np.ndarray, ...]) -> float:
        """Distance (m) crosswalk pedestrian i may still walk before its body (PED_RADIUS_M) meets a vehicle box
        across its path within 4 m ahead; 0 while it touches a box its path runs into, inf when it touches one its
        path leaves or misses (it walks out of the way of a vehicle that stopped at it)."""
        xy, length, width, c, s, _ = boxes
        t = self.p_t[i]
        ped_xy = self.p_start[i] + t * self.p_u[i] + np.array([-t[1], t[0]]) * self.p_lat[i]
        rel, d = ped_xy - xy, t * self.p_dir[i]
        k = np.flatnonzero(np.abs(rel).max(axis=1) < (length + width) / 2 + 4.5)  # boxes that can reach the path
        if not len(k):
            return np.inf
        rel, c, s, hl, hw = rel[k], c[k], s[k], length[k] / 2, width[k] / 2
        px, py = rel[:, 0] * c + rel[:, 1] * s, -rel[:, 0] * s + rel[:, 1] * c  # pedestrian in each vehicle's frame
        dx, dy = d[0] * c + d[1] * s, -d[0] * s + d[1] * c
        t_in, t_out = ray_box(px, py, dx, dy, hl + PED_RADIUS_M, hw + PED_RADIUS_M)
        ahead = (t_in >= 0.0) & (t_in < t_out) & (t_in < 4.0)
        touching = (t_in < 0.0) & (t_out > 0.0)
        b_in, b_out = ray_box(px, py, dx, dy, hl, hw)
        into_body = touching & (b_in >= 0.0) & (b_in < b_out)
        clear = np.where(ahead, np.maximum(t_in - 0.1, 0.0), np.where(into_body, 0.0, np.inf))
        return float(clear.min()) if len(clear) else np.inf

    def _step_pedestrians(self, dt: float, t_s: float, lights: TrafficLights, codes: np.ndarray,
                          ego: EgoObstacle | None) -> None:
        """Wait (and check the crossing rule) or walk along the path with smooth start/stop; turn around at ends."""
        boxes = self._vehicle_boxes(ego)
        for i in range(len(self.p_u)):
            if not self.p_moving[i]:
                self.p_wait[i] -= dt
                cw = self.p_is_cw[i]
                if self.p_wait[i] <= 0 and (not cw or self._ped_may_cross(i, t_s, lights, codes, boxes)):
                    self.p_moving[i] = True
                continue
            d_end = self.p_len[i] - self.p_u[i] if self.p_dir[i] > 0 else self.p_u[i]
            # accelerate at <= 1 m/s^2 to the walking speed; brake on a 0.8 m/s^2 profile to stop at the path end
            brake = (1.6 * max(d_end - self.p_v[i] * dt, 0.0)) ** 0.5
            if self.p_is_cw[i]:  # yield to a vehicle body across the crosswalk ahead; step back if it stays there
                clear = self._ped_clearance(i, boxes)
                brake = min(brake, (1.6 * max(clear - self.p_v[i] * dt, 0.0)) ** 0.5)
                self.p_blocked[i] = self.p_blocked[i] + dt if clear < 0.3 and self.p_v[i] < 0.1 else 0.0
                if self.p_blocked[i] > PED_GIVE_WAY_S:
                    self.p_dir[i], self.p_blocked[i] = -self.p_dir[i], 0.0
                    continue
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

    def road_pedestrians(self, ahead_s: float = 0.0) -> np.ndarray:
        """(K, 2) positions of pedestrians on the carriageway part of a crosswalk now, plus (ahead_s > 0) where those
        walking will be ahead_s s later if that is on the carriageway."""
        xy, _, vel = self.pedestrian_xy_yaw_vel()
        if not len(xy):
            return np.zeros((0, 2))
        now = xy[self.on_road_mask()]
        if ahead_s <= 0.0:
            return now
        u = self.p_u + self.p_dir * self.p_v * ahead_s
        later = self.p_is_cw & (self.p_v > 0.0) & (np.abs(u - self.p_len / 2) < self.hw + 0.2)
        return np.concatenate([now, xy[later] + vel[later] * ahead_s])

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
