"""The synthetic world: a city, its traffic lights and actors, and the ego on a route. `World.step` advances time,
`World.snapshot` exposes the observable state (`drivepipe.world_state.WorldSnapshot`) to renderers and writers.

Everything random comes from one `np.random.default_rng(seed)`, drawn in a fixed order, so the same (city, cfg,
seed, start time) and the same sequence of `step` calls give identical snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from shapely.geometry import Point

from drivepipe.config import SyntheticConfig
from drivepipe.utils import detmath
from drivepipe.vehicle import EGO_FRONT_M, EGO_WIDTH_M
from drivepipe.world.conditions import draw_conditions
from drivepipe.world.ego import (
    EGO_CENTER_OFFSET_M,
    EGO_LENGTH_M,
    LANE_CHANGE_COMMIT_M,
    BicycleState,
    ExpertDriver,
    bicycle_step,
    lane_change_safe,
    random_route,
)
from drivepipe.world.population import lanes_beside
from drivepipe.world.roads import STOP_SETBACK_M, City
from drivepipe.world.signals import GREEN, GREEN_S, RED, STATUS_NAMES, YELLOW, TrafficLights, must_stop
from drivepipe.world.traffic import EgoObstacle, Traffic
from drivepipe.world_state import EgoKinematics, WorldSnapshot

EXPERT_SPEED_RANGE = (8.0, 11.0)   # m/s, ego target speed drawn per world
LIGHT_RADIUS_M = 100.0             # snapshot reports lights of intersections whose centre is this close to the ego
NEAR_RADIUS_M = 15.0               # "near_*" scenario tags
SPEED_BANDS = (0.3, 4.0, 10.0)     # m/s: stationary < low < medium < high
GREEN_WAVE_P = 0.8                 # probability that a signal on the ego route is coordinated with its arrival
WAVE_START_LOSS_S = 2.0            # s the ego loses pulling away after a red (green-wave arrival estimate)
WAVE_INTO_GREEN_S = (0.5, GREEN_S - 5.0)  # s a coordinated signal has been green at the ego's estimated arrival
ZONE_ROUTE_M = 200.0               # m: work zones go to the kerbs beside this much of the route first
EXTEND_DETECT_M = 50.0             # m: the ego's front this close to a green stop line extends the green ...
EXTEND_MAX_S = 8.0                 # ... by at most this much per cycle (vehicle-actuated signal)


@dataclass(frozen=True)
class EgoView:
    """What the ego perceives along its route: leader (bumper gap m, speed m/s, track id, category), the next
    traffic-light stop point (status code, gap m from the front bumper), the IDM stop gap (inf = none) and the
    nearest pedestrian on the road in its corridor (gap m, track id)."""

    lead_gap: float = np.inf
    lead_v: float = 0.0
    lead_tid: int | None = None
    lead_cat: str | None = None
    light_code: int | None = None
    light_gap: float = np.inf
    stop_gap: float = np.inf
    ped_gap: float = np.inf
    ped_tid: int | None = None


class World:
    """Synthetic traffic world around one ego. `reactive` (default True): other agents yield to the ego; False =
    they ignore it (log-replay-like)."""

    def __init__(self, city: City, cfg: SyntheticConfig, seed: int, start_time_us: int) -> None:
        self.city, self.graph = city, city.graph
        self.rng = np.random.default_rng(seed)
        self.conditions = draw_conditions(seed)
        self.reactive = True
        self.start_time_us, self._elapsed_us = int(start_time_us), 0
        lanes = np.flatnonzero(~self.graph.is_connector & (self.graph.length >= 40.0))
        start_edge = int(self.rng.choice(lanes))
        horizon_s = cfg.scenes_per_log * cfg.scene_duration_s + 10.0
        self.route = random_route(self.graph, self.rng, start_edge, max(200.0, 1.3 * EXPERT_SPEED_RANGE[1] * horizon_s))
        self.driver = ExpertDriver(self.graph, self.route, float(self.rng.uniform(*EXPERT_SPEED_RANGE)))
        x, y, h = (float(a[0]) for a in self.graph.pose_at(np.array([start_edge]), np.array([5.0])))
        self.ego = BicycleState(x, y, h, v=0.7 * self.driver.target_speed, route_s=5.0)
        self.lights = TrafficLights(city, self.rng)
        self._green_wave()
        counts = {"vehicle": cfg.num_vehicles, "bicycle": cfg.num_bicycles, "pedestrian": cfg.num_pedestrians,
                  "static": cfg.num_static}
        beside = lanes_beside(self.graph, self.route.pts[self.route.cum <= ZONE_ROUTE_M])
        self.traffic = Traffic(city, self.rng, counts, start_edge, 5.0 + EGO_CENTER_OFFSET_M, beside,
                               parked_fill=cfg.parked_fill)
        self._conns_by_inter = [np.flatnonzero(self.graph.is_connector & (self.graph.intersection == i))
                                for i in range(len(city.intersections))]

    # ------------------------------------------------------------------------------------------------ public
    @property
    def time_s(self) -> float:
        """Seconds since start_time_us."""
        return self._elapsed_us / 1e6

    def step(self, dt_s: float, ego: EgoKinematics | None = None) -> None:
        """Advance all actors by dt_s (s). With `ego` given, the ego's new state is `ego` (closed loop, rear axle,
        ego-frame vx/ax) instead of the expert's; traffic reacts to the ego's state at the start of the step."""
        codes = self.lights.codes(self.time_s)
        obstacle = self._ego_obstacle() if self.reactive else None
        if ego is None:
            view = self._perceive(self.ego, codes)
            acc = self.driver.acceleration(self.ego, [(view.lead_gap, view.lead_v), (view.stop_gap, 0.0),
                                                      (view.ped_gap, 0.0)])
            new = bicycle_step(self.ego, acc, self.driver.steering(self.ego), dt_s)
        else:
            new = BicycleState(float(ego.x), float(ego.y), float(ego.yaw), v=float(ego.vx), acc=float(ego.ax),
                           yaw_rate=float(ego.yaw_rate), route_s=self.ego.route_s)
        s, _ = self.route.project(np.array([new.x, new.y]), self.ego.route_s)
        self.ego = replace(new, route_s=max(s, self.ego.route_s - 1.0))
        self.traffic.step(dt_s, self.time_s, self.lights, codes, obstacle)
        self._actuate(dt_s)
        self._elapsed_us += round(dt_s * 1e6)

    def snapshot(self) -> WorldSnapshot:
        """Observable state now: ego kinematics, actors, nearby traffic lights and active scenario tags."""
        e = self.ego
        kin = EgoKinematics(x=float(e.x), y=float(e.y), yaw=float(e.yaw), vx=float(e.v), vy=0.0, ax=float(e.acc),
                            ay=float(e.v * e.yaw_rate), yaw_rate=float(e.yaw_rate), z=0.0)
        codes = self.lights.codes(self.time_s)
        return WorldSnapshot(timestamp_us=self.start_time_us + self._elapsed_us, ego=kin,
                             actors=self.traffic.actor_states(), traffic_lights=self._light_status(codes),
                             scenario_tags=self._scenario_tags(codes), conditions=self.conditions)

    def route_polyline(self) -> np.ndarray:
        """(R, 2) global centreline of the ego route (UTM m)."""
        return self.route.pts.copy()

    def route_roadblock_ids(self) -> list[int]:
        """lane_groups_polygons / lane_group_connectors fids along the route, in order, consecutive duplicates
        removed."""
        out: list[int] = []
        for e in self.route.edges:
            fid = int(self.graph.group_fid[e])
            if not out or out[-1] != fid:
                out.append(fid)
        return out

    # ------------------------------------------------------------------------------------------------ ego
    def _green_wave(self) -> None:
        """Coordinate the signals along the route like a green wave: at each intersection, with probability
        GREEN_WAVE_P, the ego's arm turns green shortly before its estimated arrival; the rest keep random offsets
        (so the ego still meets reds). The arrival estimate drives the route at 85 % of the expert's free-road speed
        profile (curve speeds included) and waits out the reds of the uncoordinated signals on the way (plus
        WAVE_START_LOSS_S to pull away), so a wave stays in step after a stop."""
        g, r, seen = self.graph, self.route, set()
        t_s, s_prev = 0.0, self.ego.route_s
        for j, e in enumerate(r.edges[:-1]):
            inter = int(g.intersection[e])
            if g.is_connector[e] or inter in seen:
                continue
            seen.add(inter)
            s_stop = float(r.start_s[j] + g.length[e] - STOP_SETBACK_M - EGO_FRONT_M)
            grid = np.arange(s_prev, s_stop, 1.0)
            t_s += float(sum(1.0 / max(0.85 * self.driver.desired_speed(float(s)), 2.0) for s in grid))
            s_prev = max(s_stop, s_prev)
            if self.rng.random() < GREEN_WAVE_P and t_s > 0:
                self.lights.green_at(inter, int(g.arm[e]), t_s, float(self.rng.uniform(*WAVE_INTO_GREEN_S)))
            elif t_s > 0:
                wait = self.lights.time_to_green(t_s, inter, int(g.arm[e]))
                t_s += wait + (WAVE_START_LOSS_S if wait > 0 else 0.0)

    def _actuate(self, dt_s: float) -> None:
        """Detector-actuated signals: the next signal on the route holds its green (`TrafficLights.extend_green`)
        while the ego's front is within EXTEND_DETECT_M of its stop line (the stop line of the ego's arm)."""
        r, g = self.route, self.graph
        k, front = r.element_at(self.ego.route_s), self.ego.route_s + EGO_FRONT_M
        for j in range(k, min(k + 4, len(r.edges) - 1)):
            e = r.edges[j]
            d = float(r.start_s[j] + g.length[e] - STOP_SETBACK_M - front)
            if g.is_connector[e] or d < -0.5:
                continue
            if d < EXTEND_DETECT_M:
                self.lights.extend_green(int(g.intersection[e]), int(g.arm[e]), self.time_s, dt_s, EXTEND_MAX_S)
            return

    def _ego_obstacle(self) -> EgoObstacle | None:
        """The ego as an agent on the lane graph (None while it is more than 2 m off its route)."""
        e = self.ego
        _, lat = self.route.project(np.array([e.x, e.y]), e.route_s)
        if abs(lat) > 2.0:
            return None
        s_c = e.route_s + EGO_CENTER_OFFSET_M
        r, k = self.route, self.route.element_at(s_c)
        xy = np.array([e.x, e.y]) + EGO_CENTER_OFFSET_M * np.array([detmath.cos(e.yaw), detmath.sin(e.yaw)])
        nxt = r.edges[k + 1] if k + 1 < len(r.edges) and self.graph.is_connector[r.edges[k + 1]] else -1
        also = tuple((r.edges[j], float(s_c - r.start_s[j])) for j in self._lanes_ahead(e).values()
                     if j != k and r.start_s[j] == r.start_s[k])  # the other lane of a lane change in progress
        return EgoObstacle(r.edges[k], float(s_c - r.start_s[k]), float(e.v), EGO_LENGTH_M, xy, EGO_WIDTH_M,
                           float(e.yaw), -1 if self.graph.is_connector[r.edges[k]] else int(nxt), also)

    def _perceive(self, ego: BicycleState, codes: np.ndarray) -> EgoView:
        """Leader, next stop line and road pedestrians along the route ahead of the ego."""
        r, g, tr = self.route, self.graph, self.traffic
        k, front = r.element_at(ego.route_s), ego.route_s + EGO_FRONT_M
        window = self._lanes_ahead(ego)
        view: dict = {}
        for i, e in enumerate(tr.edge.tolist()):
            for e2, s_i in [(e, float(tr.s[i])), *tr.shadows(e, float(tr.s[i]), float(tr.size[i, 0]))]:
                j = window.get(e2)
                if j is None:
                    continue
                s_c = float(r.start_s[j] + s_i)
                gap = s_c - tr.size[i, 0] / 2 - front
                if s_c > ego.route_s + EGO_CENTER_OFFSET_M and gap < view.get("lead_gap", np.inf):
                    view.update(lead_gap=float(gap), lead_v=float(tr.v[i]), lead_tid=int(tr.tid[i]), lead_cat=tr.cat[i])
        busy, claims = tr.busy_connectors(None), tr.claims(codes, None)
        since_yellow = self.lights.since_yellow(self.time_s)
        for j in range(k, min(k + 4, len(r.edges) - 1)):
            e, nxt = r.edges[j], next((c for c in r.edges[j + 1:j + 3] if g.is_connector[c]), r.edges[j + 1])
            d = float(r.start_s[j] + g.length[e] - STOP_SETBACK_M - front)
            if g.is_connector[e] or d < -0.5:
                continue
            code = int(codes[g.intersection[e], g.arm[e]])
            view.update(light_code=code, light_gap=d)
            clear_s = float(since_yellow[g.intersection[e], g.arm[e]]) if tr.ranks[nxt] < 2 else np.inf
            if must_stop(code, d, ego.v, tr.must_yield(nxt, busy, claims), clear_s):
                view["stop_gap"] = d - 0.5 + 2.0
            break
        wait = self._lane_change_wait(ego)
        if wait is not None:
            view["stop_gap"] = min(view.get("stop_gap", np.inf), wait + 2.0)
        end_gap = r.length - front - 3.0
        if end_gap < 60.0:
            view["stop_gap"] = min(view.get("stop_gap", np.inf), end_gap + 2.0)
        view.update(self._road_pedestrian_ahead(ego, front))
        return EgoView(**view)

    @property
    def _lane_changes(self) -> dict[int, tuple[float, float, str]]:
        """`Route.changes_by_element` of the current route (cached per route object)."""
        if getattr(self, "_changes_of", None) is not self.route:
            self._changes_of, self._changes = self.route, self.route.changes_by_element()
        return self._changes

    def _lanes_ahead(self, ego: BicycleState) -> dict[int, int]:
        """{edge: route index} of the route elements whose agents can lead the ego: the next five, without a lane
        the route changes into before the ego commits to that change, plus the lane it leaves until the change
        ends (its body covers both lanes meanwhile)."""
        r = self.route
        k = r.element_at(ego.route_s)
        window: dict[int, int] = {}
        for j in range(max(k - 1, 0), min(k + 5, len(r.edges))):
            into, out = self._lane_changes.get(j), self._lane_changes.get(j + 1)
            if j < k and (out is None or ego.route_s > out[1]):
                continue  # behind the ego, unless the lane a change in progress leaves
            if into is not None and ego.route_s < into[0] - LANE_CHANGE_COMMIT_M:
                continue  # a lane change the ego has not committed to yet
            window.setdefault(r.edges[j], j)
        return window

    def _lane_change_wait(self, ego: BicycleState) -> float | None:
        """Rear-axle distance (m) to the commit point of the next lane change while the target lane has no safe gap
        (`ego.lane_change_safe`) within 40 m before that point; else None."""
        r, g, tr = self.route, self.graph, self.traffic
        j, (s0, _, _) = next(((j, c) for j, c in sorted(self._lane_changes.items())
                              if ego.route_s < c[0] - LANE_CHANGE_COMMIT_M), (None, (np.inf, 0, "")))
        d = s0 - LANE_CHANGE_COMMIT_M - ego.route_s
        if j is None or d > 40.0:
            return None
        target, s_e = r.edges[j], ego.route_s + EGO_CENTER_OFFSET_M - float(r.start_s[j])  # ego centre, target edge s
        pos = np.full(len(tr.edge), np.nan)
        on = tr.edge == target
        pos[on] = tr.s[on]
        for c in g.successors[target]:  # ahead, past the lane's end
            pos[tr.edge == c] = g.length[target] + tr.s[tr.edge == c]
        for c in np.flatnonzero(g.is_connector).tolist():  # behind, on a connector into the lane
            if g.successors[c][0] == target:
                pos[tr.edge == c] = tr.s[tr.edge == c] - g.length[c]
        ahead = np.flatnonzero(pos > s_e)
        behind = np.flatnonzero(pos <= s_e)
        lead = lag = None
        if len(ahead):
            i = ahead[np.argmin(pos[ahead])]
            lead = (float(pos[i] - tr.size[i, 0] / 2 - s_e - EGO_LENGTH_M / 2), float(tr.v[i]))
        if len(behind):
            i = behind[np.argmax(pos[behind])]
            lag = (float(s_e - EGO_LENGTH_M / 2 - pos[i] - tr.size[i, 0] / 2), float(tr.v[i]), float(tr.v_des[i]))
        safe = lane_change_safe(ego.v, self.driver.desired_speed(ego.route_s), lead, lag)
        return None if safe else float(d)

    def _road_pedestrian_ahead(self, ego: BicycleState, front: float) -> dict:
        """Nearest pedestrian on the road within the ego's corridor (route +- half width + 0.8 m), 30 m ahead."""
        tr, r = self.traffic, self.route
        mask = tr.on_road_mask() if len(tr.p_u) else np.zeros(0, dtype=bool)
        if not mask.any():
            return {}
        xy = tr.pedestrian_xy_yaw_vel()[0][mask]
        lo, hi = np.searchsorted(r.cum, [ego.route_s, front + 30.0])
        pts = r.pts[lo:hi + 1]
        if not len(pts):
            return {}
        d = detmath.norm_rows(xy[:, None, :] - pts[None, :, :])
        s_p = r.cum[lo + d.argmin(axis=1)]
        near = (d.min(axis=1) < EGO_WIDTH_M / 2 + 0.8) & (s_p > front - 0.3)  # beside the body: they wait for us
        if not near.any():
            return {}
        gaps = np.where(near, s_p - front - 0.3, np.inf)
        i = int(np.argmin(gaps))
        return {"ped_gap": float(gaps[i]), "ped_tid": int(tr.p_tid[np.flatnonzero(mask)[i]])}

    # ------------------------------------------------------------------------------------------------ outputs
    def _light_status(self, codes: np.ndarray) -> dict[int, str]:
        """{lane_connectors fid: status} for the intersections within LIGHT_RADIUS_M of the ego."""
        out: dict[int, str] = {}
        ego_xy = np.array([self.ego.x, self.ego.y])
        for inter, conns in zip(self.city.intersections, self._conns_by_inter):
            if detmath.norm(inter.center - ego_xy) <= LIGHT_RADIUS_M:
                for c in conns:
                    out[int(self.graph.fid[c])] = STATUS_NAMES[codes[inter.index, self.graph.arm[c]]]
        return out

    def _scenario_tags(self, codes: np.ndarray) -> tuple[tuple[str, int | None], ...]:
        """nuPlan scenario types that apply now (scenario_tag.type names), each with the interacting track id."""
        e, view = self.ego, self._perceive(self.ego, codes)
        tags: list[tuple[str, int | None]] = []
        v = e.v
        band = ("stationary" if v < SPEED_BANDS[0] else "low_magnitude_speed" if v < SPEED_BANDS[1]
                else "medium_magnitude_speed" if v < SPEED_BANDS[2] else "high_magnitude_speed")
        tags.append((band, None))
        tags += self._intersection_tags(view)
        side = self.route.lane_change_at(e.route_s + EGO_CENTER_OFFSET_M)
        if side is not None:
            tags += [("changing_lane", None), (f"changing_lane_to_{side}", None)]
            if view.lead_gap < 30.0:
                tags.append(("changing_lane_with_lead", view.lead_tid))
        tags += self._near_tags()
        if abs(v * e.yaw_rate) > 3.0:
            tags.append(("high_lateral_acceleration", None))
        return tuple(tags)

    def _intersection_tags(self, view: EgoView) -> list[tuple[str, int | None]]:
        """Lane following, traffic-light and intersection-traversal tags."""
        e, g = self.ego, self.graph
        k = self.route.element_at(e.route_s + EGO_CENTER_OFFSET_M)
        edge, tags = self.route.edges[k], []
        lead = view.lead_tid if view.lead_gap < 30.0 else None
        red_ahead = view.light_code in (RED, YELLOW) and view.light_gap < 30.0
        if g.is_connector[edge]:
            tags += [("on_intersection", None), ("on_traffic_light_intersection", None)]
            if e.v >= SPEED_BANDS[0]:
                tags += [("traversing_intersection", None), ("traversing_traffic_light_intersection", None)]
            if e.route_s + EGO_CENTER_OFFSET_M - self.route.start_s[k] < 0.5 * g.length[edge]:
                turn = g.turn[edge]
                tags.append(("starting_straight_traffic_light_intersection_traversal", None) if turn == "straight"
                            else (f"starting_{turn}_turn", None))
                if turn != "straight":
                    tags.append(("starting_low_speed_turn", None))
        elif red_ahead and e.v < SPEED_BANDS[0]:
            tags.append(("stationary_at_traffic_light_with_lead" if lead is not None and view.lead_gap < view.light_gap
                         else "stationary_at_traffic_light_without_lead", lead))
        elif red_ahead and e.acc < -0.3:
            tags.append(("stopping_at_traffic_light_with_lead" if lead is not None and view.lead_gap < view.light_gap
                         else "stopping_at_traffic_light_without_lead", lead))
        elif view.light_code == GREEN and view.light_gap < 15.0 and e.v < 3.0 and e.acc > 0.3:
            tags += [("accelerating_at_traffic_light", None),
                     ("accelerating_at_traffic_light_with_lead" if lead is not None
                      else "accelerating_at_traffic_light_without_lead", lead)]
        elif e.v >= SPEED_BANDS[0]:
            tags.append(("following_lane_with_lead", lead) if lead is not None
                        else ("following_lane_without_lead", None))
            if lead is not None and view.lead_v < 0.5 * self.driver.target_speed:
                tags.append(("following_lane_with_slow_lead", lead))
        elif lead is not None and view.lead_gap < 6.0:
            tags.append(("stationary_in_traffic", lead))
        if view.lead_cat == "bicycle" and view.lead_gap < 20.0:
            tags.append(("behind_bike", view.lead_tid))
        if view.ped_tid is not None and view.ped_gap < 10.0 and e.v < SPEED_BANDS[0]:
            tags.append(("waiting_for_pedestrian_to_cross", view.ped_tid))
        return tags

    def _near_tags(self) -> list[tuple[str, int | None]]:
        """Tags about nearby agents and objects within NEAR_RADIUS_M of the ego's box centre."""
        e, tr = self.ego, self.traffic
        c = np.array([e.x, e.y]) + EGO_CENTER_OFFSET_M * np.array([detmath.cos(e.yaw), detmath.sin(e.yaw)])
        tags: list[tuple[str, int | None]] = []
        if len(tr.edge):
            x, y, _ = self.graph.pose_at(tr.edge, tr.s)
            near = detmath.hypot(x - c[0], y - c[1]) < NEAR_RADIUS_M
            cats = np.array(tr.cat)
            if np.sum(near & (cats == "vehicle")) >= 3:
                tags.append(("near_multiple_vehicles", None))
            if np.sum(near & (cats == "bicycle")) >= 2:
                tags.append(("near_multiple_bikes", None))
        if len(tr.p_u):
            pxy = tr.pedestrian_xy_yaw_vel()[0]
            d = detmath.norm_rows(pxy - c)
            if np.sum(d < NEAR_RADIUS_M) >= 3:
                tags.append(("near_multiple_pedestrians", None))
            on_cw = tr.on_road_mask() & (d < 20.0)
            if on_cw.any():
                i = int(np.argmin(np.where(on_cw, d, np.inf)))
                tags.append(("near_pedestrian_on_crosswalk", int(tr.p_tid[i])))
        names = {"czone_sign": "near_construction_zone_sign", "traffic_cone": "near_trafficcone_on_driveable",
                 "barrier": "near_barrier_on_driveable"}
        for cat, name in names.items():
            hits = [(detmath.norm(p[:2] - c), int(t)) for t, k, p in zip(tr.st_tid, tr.st_cat, tr.st_pose)
                    if k == cat and detmath.norm(p[:2] - c) < NEAR_RADIUS_M]
            if hits:
                tags.append((name, min(hits)[1]))
        for f in self.city.vector_map.query("crosswalks", (c[0] - 1.0, c[1] - 1.0, c[0] + 1.0, c[1] + 1.0)):
            if f.geometry.distance(Point(float(c[0]), float(c[1]))) < 1.0:
                tags.append(("traversing_crosswalk", None))
                break
        return tags
