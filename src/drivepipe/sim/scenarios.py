"""Closed-loop scenario selection from logs: typed events found from the log's tags and geometry, balanced over
types and locations, each with a lane-level route to a goal past where the expert stops.

Logs: the held-out test logs (`log_splits.test` of the cache header) when the header has them, else every log
(`scenario_source` says which). Types (SCENARIO_TYPES), each found from nuPlan scenario tags OR geometry, so the
selection works on logs with and without the tags:
- lead_braking: a vehicle ahead on the expert's path while the expert slows by > BRAKE_DROP_MPS;
- traffic_light: a red/yellow connector on the expert's path ahead (traffic_light_status), or a light tag;
- unprotected_turn: the expert's heading turns > TURN_RAD with an oncoming vehicle near;
- pedestrian_crossing: a pedestrian within PATH_HALF_WIDTH_M of the expert's path ahead, or a crosswalk tag;
- parked_blocking: a stationary vehicle/object on the expert's lane ahead, or a near-object tag;
- lane_change: the expert's lane changes within one lane group (map), or a lane-change tag; where a log has
  none, a lane-change mission: a sweep where the expert drives on a lane with a same-direction neighbour and room
  ahead, whose route moves over to the neighbour (`mission` "change_lane", sim/routes.py);
- cruising: the expert moves faster than CRUISE_MPS with none of the above.
A scenario starts EVENT_LEAD_S before its event (nuPlan: 3 s), clamped so it fits the log.

Route (sim/routes.py): the baseline paths (lanes and lane connectors) the expert drove, map-matched, then extended
along the lane graph (smallest turn first) until the route is `goal_beyond_m` longer than what the expert drove in
the scenario; the goal is its end. The expert's exact trajectory is never the route (no leak of where it stops).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from drivepipe.schema import CATEGORIES
from drivepipe.sim.interfaces import ClosedLoopScenario
from drivepipe.sim.routes import MATCH_TOL_M, LaneChangeFinder, lane_change_route, lane_route
from drivepipe.utils.geometry import quat_to_yaw, wrap_angle
from drivepipe.world_state import EgoKinematics

SCENARIO_TYPES = ("lead_braking", "traffic_light", "unprotected_turn", "pedestrian_crossing", "parked_blocking",
                  "lane_change", "cruising")
TAG_TYPES = {"following_lane_with_slow_lead": "lead_braking", "stopping_with_lead": "lead_braking",
             "stopping_at_traffic_light_with_lead": "traffic_light",
             "stopping_at_traffic_light_without_lead": "traffic_light",
             "stationary_at_traffic_light_with_lead": "traffic_light",
             "stationary_at_traffic_light_without_lead": "traffic_light",
             "accelerating_at_traffic_light": "traffic_light",
             "starting_left_turn": "unprotected_turn", "starting_right_turn": "unprotected_turn",
             "starting_unprotected_cross_turn": "unprotected_turn",
             "waiting_for_pedestrian_to_cross": "pedestrian_crossing",
             "near_pedestrian_on_crosswalk": "pedestrian_crossing",
             "near_trafficcone_on_driveable": "parked_blocking", "near_barrier_on_driveable": "parked_blocking",
             "near_construction_zone_sign": "parked_blocking", "changing_lane": "lane_change",
             "changing_lane_to_left": "lane_change", "changing_lane_to_right": "lane_change"}
SAMPLE_S = 0.5             # s between candidate event sweeps
LOOK_S = 5.0               # s of expert future that an event is looked for in
EVENT_LEAD_S = 3.0         # s a scenario starts before its event
PATH_HALF_WIDTH_M = 2.5    # an object this close to the expert's future path is on it
AHEAD_M = 40.0             # m ahead that objects and lights count
BRAKE_DROP_MPS = 2.0
TURN_RAD = 0.8
CRUISE_MPS = 4.0
ROUTE_START_TOL_M = 5.0    # a route must start this close to the ego's start pose
MISSION_STRENGTH = 0.5     # a lane-change mission ranks below every lane change the expert drove
PARKED_MPS = 0.2
MIN_START_GAP_S = 2.0      # s between the starts of two scenarios of the same log
MIN_DURATION_S = 1.0


@dataclass(frozen=True)
class Candidate:
    """An event of `scenario_type` at sweep `index` of a log; `strength` ranks candidates of one type."""

    log_name: str
    location: str
    index: int
    scenario_type: str
    strength: float
    mission: str = "log"  # "log": the route follows the expert's lanes; "change_lane": it moves to the neighbour


# ----------------------------------------------------------------------------------------------- which logs
def scenario_logs(cache_dir: str | Path | None, all_logs: list[str]) -> tuple[list[str], str]:
    """(log names to draw scenarios from, source note): the cache header's `log_splits.test` when present."""
    if cache_dir is not None and (Path(cache_dir) / "data.mdb").is_file():
        from drivepipe.cache.lmdb_store import LmdbReader

        splits = LmdbReader(cache_dir).header.get("log_splits")
        if isinstance(splits, dict) and splits.get("test"):
            test = sorted(set(splits["test"]) & set(all_logs))
            if test:
                return test, "test_split"
    return sorted(all_logs), "all_logs (the cache header has no log_splits.test)"


# --------------------------------------------------------------------------------------------- event finding
def _future(pcs: Any, i: int, look_s: float) -> np.ndarray:
    t = pcs.timestamp_us
    return np.flatnonzero((t >= t[i]) & (t <= t[i] + look_s * 1e6))


def _along_path(path: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(arc length of the nearest path vertex, distance to it) of each point (vectorised, vertex-level)."""
    if len(path) == 0 or len(pts) == 0:
        return np.zeros(len(pts)), np.full(len(pts), np.inf)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
    d = np.linalg.norm(pts[:, None, :] - path[None, :, :], axis=2)
    k = np.argmin(d, axis=1)
    return s[k], d[np.arange(len(pts)), k]


def _geometry_types(log: Any, i: int, lights: dict[str, dict[int, str]], route_conn: dict[int, Any],
                    lanes: Any) -> dict[str, float]:
    """Types whose geometric rule holds at sweep i, with a strength."""
    pcs, b = log.lidar_pcs, log.boxes
    fut = _future(pcs, i, LOOK_S)
    path = pcs.xyz[fut, :2]
    speed = np.hypot(pcs.velocity[fut, 0], pcs.velocity[fut, 1])
    out: dict[str, float] = {}
    rows = b.rows(i)
    cat = np.array([CATEGORIES[int(c)] for c in b.category[rows]])
    xy, vel = b.center[rows, :2], b.velocity[rows, :2]
    along, dist = _along_path(path, xy)
    on_path = (dist < PATH_HALF_WIDTH_M) & (along > 1.0) & (along < AHEAD_M)
    vmove = np.hypot(vel[:, 0], vel[:, 1])
    drop = float(speed[0] - speed.min()) if len(speed) else 0.0
    if drop > BRAKE_DROP_MPS and np.any(on_path & (cat == "vehicle") & (vmove > PARKED_MPS)):
        out["lead_braking"] = drop
    status = lights.get(str(pcs.token[i]), {})
    reds = [fid for fid, st in status.items() if st in ("red", "yellow") and fid in route_conn]
    if reds:
        c_along, c_dist = _along_path(path, np.array([route_conn[f] for f in reds]))
        if np.any((c_dist < MATCH_TOL_M) & (c_along > 0.5)):
            out["traffic_light"] = 1.0 + drop
    yaw = np.unwrap([quat_to_yaw(q) for q in pcs.quat[fut]]) if len(fut) else np.zeros(1)
    turn = float(np.max(np.abs(yaw - yaw[0])))
    if turn > TURN_RAD:
        h0 = yaw[0]
        oncoming = (cat == "vehicle") & (np.abs(wrap_angle(b.yaw[rows] - h0 - np.pi)) < 0.6) & \
            (np.linalg.norm(xy - path[0], axis=1) < 2 * AHEAD_M)
        out["unprotected_turn"] = turn + float(oncoming.sum())
    near_ped = on_path & np.isin(cat, ("pedestrian", "bicycle"))
    if near_ped.any():
        out["pedestrian_crossing"] = float(AHEAD_M - along[near_ped].min())
    parked = on_path & (vmove < PARKED_MPS) & (cat != "pedestrian") & (dist < 1.5)
    if parked.any():
        out["parked_blocking"] = float(AHEAD_M - along[parked].min())
    if lanes is not None and len(path) > 2:
        g0, g1 = lanes(path[0]), lanes(path[-1])
        if g0 and g1 and g0[1] == g1[1] and g0[0] != g1[0]:
            out["lane_change"] = 1.0
    if not out and len(speed) and speed.mean() > CRUISE_MPS:
        out["cruising"] = float(speed.mean())
    return out


def _lane_lookup(vmap: Any) -> Any:
    """point -> (lane fid, lane group fid) of the lane polygon holding it, or None."""
    def lookup(p: np.ndarray) -> tuple[int, int] | None:
        pt = shapely.Point(float(p[0]), float(p[1]))
        for f in vmap.query("lanes_polygons", (p[0] - 0.1, p[1] - 0.1, p[0] + 0.1, p[1] + 0.1)):
            if f.geometry.contains(pt) and f.props.get("lane_group_fid") is not None:
                return int(f.props.get("lane_fid", f.fid) or f.fid), int(f.props["lane_group_fid"])
        return None
    return lookup


def find_candidates(log: Any, vmap: Any, lights: dict[str, dict[int, str]]) -> list[Candidate]:
    """Every typed event of a log, sampled every SAMPLE_S (see the module docstring)."""
    pcs = log.lidar_pcs
    tags = log.scenario_tags()
    conn = {}
    for f in vmap.layer("lane_connectors"):
        line = f.geometry
        if hasattr(line, "coords") and len(line.coords):
            conn[int(f.fid)] = np.asarray(line.coords)[0, :2]
    lanes = _lane_lookup(vmap) if vmap.layer("lanes_polygons") else None
    finder = LaneChangeFinder(vmap) if lanes is not None else None
    t = (pcs.timestamp_us - pcs.timestamp_us[0]) / 1e6
    out = []
    for i in np.unique(np.searchsorted(t, np.arange(0.0, t[-1], SAMPLE_S))):
        found = _geometry_types(log, int(i), lights, conn, lanes)
        for tag in tags.get(str(pcs.token[i]), ()):
            if tag in TAG_TYPES:
                found[TAG_TYPES[tag]] = found.get(TAG_TYPES[tag], 0.0) + 1.0
        for typ, strength in found.items():
            out.append(Candidate(log.log_name, log.location, int(i), typ, float(strength)))
        speed = float(np.hypot(pcs.velocity[i, 0], pcs.velocity[i, 1]))
        if "lane_change" not in found and finder is not None and speed > CRUISE_MPS / 2 and t[i] >= EVENT_LEAD_S and \
                finder.pair(pcs.xyz[i, :2], quat_to_yaw(pcs.quat[i])) is not None:
            out.append(Candidate(log.log_name, log.location, int(i), "lane_change", MISSION_STRENGTH, "change_lane"))
    return out


def balanced_pick(cands: list[Candidate], num: int, start_of: Any) -> list[Candidate]:
    """Round-robin over types; within a type, the location this type has visited least, then the location with the
    fewest picks overall (so the picks spread over all locations, not only over the first ones in name order);
    strongest first; starts of one log at least MIN_START_GAP_S apart (relaxed to any distinct start when too few
    remain).

    The first round visits the types found in the fewest logs first (ties: SCENARIO_TYPES order), so an event that
    only one log holds (a logged lane change) takes its slot before types that every log offers fill that log's
    starts; later rounds go in SCENARIO_TYPES order."""
    by_type: dict[str, dict[str, list[Candidate]]] = defaultdict(lambda: defaultdict(list))
    for c in sorted(cands, key=lambda c: (-c.strength, c.log_name, c.index)):
        by_type[c.scenario_type][c.location].append(c)
    logs_of = {t: len({c.log_name for cs in by_type[t].values() for c in cs if c.mission == "log"}) or float("inf")
               for t in list(by_type)}  # logs with a logged event of the type; missions only: last
    scarce_first = sorted(SCENARIO_TYPES, key=lambda t: (logs_of.get(t, 0), SCENARIO_TYPES.index(t)))
    for gap in (MIN_START_GAP_S, 1e-6):
        picked: list[Candidate] = []
        starts: dict[str, list[float]] = defaultdict(list)
        per_loc: dict[str, int] = defaultdict(int)
        per_type_loc: dict[tuple[str, str], int] = defaultdict(int)
        progress, order = True, scarce_first
        while len(picked) < num and progress:
            progress = False
            for typ in order:
                locs = sorted(by_type.get(typ, {}), key=lambda loc: (per_type_loc[typ, loc], per_loc[loc], loc))
                for loc in locs:
                    c = next((c for c in by_type[typ][loc] if all(abs(start_of(c) - s) >= gap
                                                                  for s in starts[c.log_name])), None)
                    if c is not None:
                        picked.append(c)
                        starts[c.log_name].append(start_of(c))
                        per_loc[loc] += 1
                        per_type_loc[typ, loc] += 1
                        progress = True
                        break
                if len(picked) >= num:
                    break
            order = SCENARIO_TYPES
        if len(picked) >= num or gap < 1.0:
            return picked
    return picked


def make_scenario(log: Any, vmap: Any, index: int, scenario_type: str, duration_s: float, step_s: float,
                  goal_beyond_m: float, seed_of: Any, mission: str = "log") -> ClosedLoopScenario:
    """The scenario of an event at sweep `index` (starts EVENT_LEAD_S before, fits in the log); mission
    "change_lane" routes into the neighbour lane from the expert's pose at `index`."""
    pcs = log.lidar_pcs
    t = (pcs.timestamp_us - pcs.timestamp_us[0]) / 1e6
    duration = float(min(duration_s, t[-1] - step_s))
    if duration < MIN_DURATION_S:
        raise ValueError(f"{log.log_name}: log of {t[-1]:.1f} s is too short for a closed-loop scenario")
    t0 = float(np.clip(t[index] - EVENT_LEAD_S, 0.0, t[-1] - step_s - duration))
    i0 = int(np.searchsorted(t, t0 - 1e-9))
    sel = np.flatnonzero(t >= t[i0])
    yaw = np.array([quat_to_yaw(q) for q in pcs.quat[sel]])
    xy = pcs.xyz[sel, :2]
    in_sc = t[sel] <= t[i0] + duration
    driven = float(np.linalg.norm(np.diff(xy[in_sc], axis=0), axis=1).sum()) if in_sc.sum() > 1 else 0.0
    found = None
    if mission == "change_lane":
        found = lane_change_route(vmap, xy, yaw, int(np.clip(index - i0, 0, len(xy) - 1)), driven + goal_beyond_m)
        if found is None:
            raise ValueError(f"{log.log_name}: no neighbour lane with room for a lane change at sweep {index}")
    route, lights, source = found or lane_route(vmap, xy, yaw, driven + goal_beyond_m)
    if np.linalg.norm(route[0] - xy[0]) > ROUTE_START_TOL_M:
        raise ValueError(f"{log.log_name}: the route of sweep {index} starts {np.linalg.norm(route[0] - xy[0]):.1f} m "
                         "from the ego")
    start = EgoKinematics(x=float(xy[0, 0]), y=float(xy[0, 1]), yaw=float(yaw[0]),
                          vx=float(max(0.0, pcs.velocity[i0, 0])), z=float(pcs.xyz[i0, 2]))
    token = str(pcs.token[i0])
    key = f"{log.log_name}/{token}"
    expert = np.column_stack([xy, yaw, np.hypot(pcs.velocity[sel, 0], pcs.velocity[sel, 1]), t[sel] - t[i0]])
    extra = {"scenario_type": scenario_type, "mission": mission, "route_source": source, "expert_driven_m": driven,
             "route_lights": lights, "expert": expert, "goal_xy": route[-1].tolist()}
    return ClosedLoopScenario(key, log.log_name, token, int(pcs.timestamp_us[i0]), log.location, route, start,
                              duration, int(seed_of(key)), extra)
