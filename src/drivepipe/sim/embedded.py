"""`EmbeddedBackend`: nuPlan-format log replay with a simulated ego, re-rendered sensors and no external process.

Scenarios: typed events of the test logs with a lane-level route to a goal (sim/scenarios.py). Every tick:
1. the ego moves by the agent's action on the kinematic bicycle (sim/controller.py);
2. agents: `replay` puts every logged box of the sweep nearest in time where the log has it; `idm`
   (sim/reactive.py) lets the vehicles present at the start drive along their own logged path with IDM (nuPlan's
   reactive-agent values), slowing for the ego when it is on their path; other objects replay;
3. the six cameras and the lidar are re-rendered from the SIMULATED ego pose with the synthetic world's renderers
   (map from MapsRoot + current agents; rig from the log's calibrations, cameras rendered directly at
   preprocess.image_width, the size the model sees; actors beyond data.synthetic.lidar_max_range_m are not drawn:
   the lidar cannot reach them and on camera they cover a few pixels), the lidar moved into the ego frame with the log's T_ego_from_lidar, as the
   reader does, and assembled into a SensorBundle so perception runs inside the loop;
4. a step-log row (sim/scorer.py STEP_COLUMNS) is computed: collisions (ego footprint vs agent footprints),
   off-drivable-area (a corner > 0.3 m outside), route progress/deviation, red light (entering a lane connector
   whose light is red in the log's traffic_light_status), expert progress, time-to-collision, speed limit.
The agent gets the route (ego frame) and the traffic lights of the route's connectors ahead (from the log's
traffic_light_status); route_length_m is the whole route to the goal, so standing still scores RC 0.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.ops import unary_union

from drivepipe.config import Config
from drivepipe.mapdata import SEMANTIC_LAYERS
from drivepipe.schema import CATEGORIES, BundleMeta, CameraFrame
from drivepipe.sim.controller import ControlLimits, propagate_bicycle
from drivepipe.sim.interfaces import (
    Action,
    ClosedLoopScenario,
    EgoHistory,
    RouteProgress,
    StepResult,
    actors_to_boxes,
    assemble_bundle,
)
from drivepipe.sim.reactive import IdmAgents
from drivepipe.sim.scorer import format_collisions
from drivepipe.sim.stepmetrics import SpeedLimits, lights_ahead, overlap_many, time_to_collision
from drivepipe.utils.geometry import box_corners_2d, global_to_ego_xy_yaw, wrap_angle
from drivepipe.vehicle import EGO_FRONT_M, EGO_REAR_M, EGO_WIDTH_M
from drivepipe.world.conditions import conditions_from_row
from drivepipe.world_state import ActorState, EgoKinematics, WorldSnapshot

OFF_ROAD_TOLERANCE_M = 0.3
STOP_LINE_ZONE_M = 3.0  # a red light counts when the front enters a connector within this of its start
COLLISION_KIND = {"vehicle": "vehicle", "pedestrian": "pedestrian", "bicycle": "pedestrian"}  # else static
_EGO_RADIUS_M = 0.5 * float(np.hypot(EGO_FRONT_M + EGO_REAR_M, EGO_WIDTH_M))  # footprint centre -> corner


def ego_corners(ego: EgoKinematics) -> np.ndarray:
    """(4, 2) global footprint corners of the ego (rear-axle pose)."""
    off = (EGO_FRONT_M - EGO_REAR_M) / 2
    centre = np.array([[ego.x + off * np.cos(ego.yaw), ego.y + off * np.sin(ego.yaw)]])
    return box_corners_2d(centre, np.array([EGO_FRONT_M + EGO_REAR_M]), np.array([EGO_WIDTH_M]),
                          np.array([ego.yaw]))[0]


def log_rig(log: Any, max_width: int) -> Any:
    """A render Rig from a log's calibrations, cameras scaled down so width <= max_width (intrinsics scaled)."""
    from drivepipe.world.rig import Rig

    cams = {}
    for ch, cal in log.cameras.items():
        f = min(1.0, max_width / cal.width)
        K = cal.intrinsic.copy()
        K[:2] *= f
        cams[ch] = replace(cal, width=int(round(cal.width * f)), height=int(round(cal.height * f)), intrinsic=K)
    return Rig(cameras=cams, T_ego_from_lidar=np.asarray(log.T_ego_from_lidar, dtype=np.float64))


class EmbeddedBackend:
    """SimBackend over nuPlan-format logs (synthetic or real). See the module docstring."""

    name = "embedded"

    def __init__(self, cfg: Config, data_root: str | Path, cache_dir: str | Path | None = None) -> None:
        self.cfg, self.data_root, self.cache_dir = cfg, Path(data_root), cache_dir
        self._layout: Any = None
        self._maps: Any = None
        self._log: Any = None
        self._logs: dict[str, Any] = {}
        self._lights: dict[str, dict[int, str]] = {}
        self._prepared: dict[str, tuple[Any, ...]] = {}  # log -> (map, rig, lights, speed limits, connector lines)
        self._actors_cache: dict[tuple[str, int], tuple[ActorState, ...]] = {}  # (log, sweep) -> logged actors
        self._limits = ControlLimits()
        self.render_sensors, self.privileged, self.agent_mode = True, False, cfg.carla_eval.agents[0]
        self.selection: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------- data access
    def _open(self, log_name: str) -> Any:
        from drivepipe.nuplan.db import NuplanLog
        from drivepipe.nuplan.layout import discover
        from drivepipe.nuplan.maps import MapsRoot

        if self._layout is None:
            self._layout = discover(self.data_root)
            self._maps = MapsRoot(self._layout.maps_root)
        if log_name not in self._logs:
            db = {p.stem: p for p in self._layout.db_files}.get(log_name)
            if db is None:
                raise FileNotFoundError(f"{self.data_root}: no log {log_name}.db")
            self._logs[log_name] = NuplanLog(db, self._layout.sensor_root, self._maps,
                                             self.cfg.data.missing_blob_policy)
        self._log = self._logs[log_name]
        return self._log

    def log_names(self) -> list[str]:
        from drivepipe.nuplan.layout import discover

        return sorted(p.stem for p in discover(self.data_root).db_files)

    def select_scenarios(self, num: int, seed_of: Any) -> list[ClosedLoopScenario]:
        """`num` typed scenarios from the test logs, balanced over types and locations (sim/scenarios.py);
        `self.selection` records the source logs and the types found / missing."""
        from drivepipe.sim import scenarios as S

        logs, source = S.scenario_logs(self.cache_dir, self.log_names())
        cands = []
        for name in logs:
            log = self.prepare(name)
            cands += S.find_candidates(log, self._vmap, self._lights)
        if not cands:
            raise ValueError(f"{self.data_root}: no closed-loop scenario candidates in logs {logs}")
        dur = self.cfg.carla_eval.duration_s
        t0 = {}
        for name in logs:
            pcs = self._open(name).lidar_pcs
            t0[name] = (pcs.timestamp_us - pcs.timestamp_us[0]) / 1e6
        start_of = (lambda c: float(np.clip(t0[c.log_name][c.index] - S.EVENT_LEAD_S, 0.0,
                                            max(0.0, t0[c.log_name][-1] - dur))))
        out = []
        for c in S.balanced_pick(cands, num, start_of):
            log = self.prepare(c.log_name)
            out.append(S.make_scenario(log, self._vmap, c.index, c.scenario_type, dur, self.cfg.carla_eval.step_s,
                                       self.cfg.carla_eval.goal_beyond_m, seed_of, c.mission))
        found = sorted({c.scenario_type for c in cands})
        self.selection = {"scenario_source": source, "logs": logs, "types_found": found,
                          "types_missing": [t for t in S.SCENARIO_TYPES if t not in found]}
        return out

    def make_scenario(self, key: str, seed: int, scenario_type: str = "manual") -> ClosedLoopScenario:
        """The scenario around the sweep of `key` = `<log>/<token>` (starts EVENT_LEAD_S before it)."""
        from drivepipe.sim import scenarios as S

        log_name, token = key.rsplit("/", 1)
        log = self.prepare(log_name)
        return S.make_scenario(log, self._vmap, log.token_index[token], scenario_type, self.cfg.carla_eval.duration_s,
                               self.cfg.carla_eval.step_s, self.cfg.carla_eval.goal_beyond_m, lambda _k: seed)

    # ---------------------------------------------------------------------------------------------- episode
    def reset(self, scenario: ClosedLoopScenario) -> Any:
        """See base class. Before reset the harness may set `render_sensors` (False: no cameras/lidar, for
        baselines that do not perceive) and `privileged` (True: ground-truth boxes in the bundle)."""
        log = self.prepare(scenario.log_name)
        self._sc = scenario
        self._t, self._ego = 0.0, scenario.start
        self._route = RouteProgress(scenario.route_xy)
        self._expert = RouteProgress(scenario.route_xy)
        self._route_len = self._route.length_m
        self._route_lights = list(scenario.extra.get("route_lights", []))
        self._history = EgoHistory()
        self._inside_red: set[int] = set()
        self._idm = IdmAgents(log, self._sweep(0.0)) if self.agent_mode == "idm" else None
        return self._bundle()

    def prepare(self, log_name: str) -> Any:
        """Open a log with its map, render rig, traffic lights and speed limits (built once per log and kept until
        `shutdown`: a worker runs many episodes on few logs); the NuplanLog."""
        log = self._open(log_name)
        if log_name not in self._prepared:
            vmap = log.load_map()
            conn_lines = {int(f.fid): f.geometry for f in vmap.layer("lane_connectors")
                          if f.geometry.geom_type == "LineString" and f.geometry.length > 0}
            self._prepared[log_name] = (vmap, log_rig(log, self.cfg.preprocess.image_width), log.traffic_lights(),
                                        SpeedLimits(vmap), conn_lines)
        self._vmap, self._rig, self._lights, self._limits_map, self._conn_lines = self._prepared[log_name]
        return log

    def _sweep(self, t_s: float) -> int:
        """Row of the logged sweep nearest to scenario time t_s."""
        ts = self._log.lidar_pcs.timestamp_us
        return int(np.argmin(np.abs(ts - (self._sc.start_time_us + t_s * 1e6))))

    def _expert_pose(self, t_s: float) -> tuple[float, float]:
        xyz = self._log.lidar_pcs.xyz[self._sweep(t_s)]
        return float(xyz[0]), float(xyz[1])

    def actors_at(self, index: int) -> list[ActorState]:
        """The logged boxes of sweep `index` as ActorStates (global frame); cached per (log, sweep) until
        `shutdown` (every agent replays the same sweeps)."""
        key = (self._log.log_name, int(index))
        if key not in self._actors_cache:
            b = self._log.boxes
            rows = b.rows(index)
            self._actors_cache[key] = tuple(
                ActorState(track_id=int(b.track_id[k]), category=CATEGORIES[int(b.category[k])],
                           x=float(b.center[k, 0]), y=float(b.center[k, 1]), z=float(b.center[k, 2]),
                           yaw=float(b.yaw[k]), length=float(b.size[k, 0]), width=float(b.size[k, 1]),
                           height=float(b.size[k, 2]), vx=float(b.velocity[k, 0]), vy=float(b.velocity[k, 1]))
                for k in range(rows.start, rows.stop))
        return list(self._actors_cache[key])

    def render(self, index: int, ego: EgoKinematics, actors: list[ActorState], timestamp_us: int
               ) -> tuple[dict, np.ndarray]:
        """Cameras (channel -> CameraFrame) and lidar (N, 6) in the EGO frame for an ego pose and agents
        (after `prepare`); `index` is the logged sweep whose traffic lights apply; timestamp_us seeds lidar noise."""
        from drivepipe.world.render_camera import render_cameras
        from drivepipe.world.render_lidar import render_lidar

        ts = int(timestamp_us)
        reach = self.cfg.data.synthetic.lidar_max_range_m  # farther actors: no lidar return, a few pixels on camera
        actors = [a for a in actors if np.hypot(a.x - ego.x, a.y - ego.y) <= reach + a.length / 2]
        snap = WorldSnapshot(timestamp_us=ts, ego=ego, actors=tuple(actors),
                             traffic_lights=self._lights.get(str(self._log.lidar_pcs.token[index]), {}),
                             conditions=conditions_from_row(self._log.conditions))
        channels = self.cfg.preprocess.cameras
        images = render_cameras(self._vmap, snap, self._rig, channels)
        cams = {ch: CameraFrame(self._rig.cameras[ch], images[ch], ts) for ch in channels}
        pts = render_lidar(self._vmap, snap, self._rig, self.cfg.data.synthetic)
        T = self._rig.T_ego_from_lidar
        pts = pts.copy()
        pts[:, :3] = (pts[:, :3].astype(np.float64) @ T[:3, :3].T + T[:3, 3]).astype(np.float32)
        return cams, pts

    def _actors_now(self) -> list[ActorState]:
        index = self._sweep(self._t)
        logged = self.actors_at(index)
        return self._idm.actors(logged, self._t, self._ego, self.cfg.carla_eval.step_s) if self._idm else logged

    def _bundle(self) -> Any:
        index = self._sweep(self._t)
        self._actors = self._actors_now()
        ts = int(self._sc.start_time_us + round(self._t * 1e6))
        if self.render_sensors:
            cams, lidar = self.render(index, self._ego, self._actors, ts)
        else:
            cams, lidar = {}, np.zeros((0, 6), np.float32)
        self._history.push(self._t, self._ego.x, self._ego.y, self._ego.yaw)
        pre = self.cfg.preprocess
        route, _ = global_to_ego_xy_yaw(self._sc.route_xy, np.zeros(len(self._sc.route_xy)), self._ego.x,
                                        self._ego.y, self._ego.yaw)
        lights = lights_ahead(self._route_lights, self._lights.get(str(self._log.lidar_pcs.token[index]), {}),
                              self._ego)
        meta = BundleMeta(self._sc.log_name, str(self._log.lidar_pcs.token[index]), ts, self._sc.location)
        gt = actors_to_boxes(self._actors, self._ego) if self.privileged else None
        return assemble_bundle(meta, self._ego, cams, lidar, self._history.sample(pre.traj_dt_s, pre.history_steps),
                               route, lights, gt)

    def step(self, action: Action) -> StepResult:
        """See base class. `action.pose` (the expert baseline) puts the ego at that pose instead of driving."""
        lim, dt = self._limits, self.cfg.carla_eval.step_s
        steer = float(np.clip(action.steer_rad, -lim.max_steer_rad, lim.max_steer_rad))
        accel = float(np.clip(action.accel_mps2, -lim.max_decel_mps2, lim.max_accel_mps2))
        if action.pose is not None:
            x, y, yaw, v = (float(a) for a in action.pose)
            dyaw = float(wrap_angle(yaw - self._ego.yaw))
            self._ego = EgoKinematics(x=x, y=y, yaw=yaw, vx=v, ax=(v - self._ego.vx) / dt, yaw_rate=dyaw / dt,
                                      z=self._ego.z)
        else:
            self._ego = propagate_bicycle(self._ego, steer, accel, dt)
        self._t += dt
        done = self._t >= self._sc.duration_s - 1e-6
        bundle = self._bundle()  # moves the agents to the new time, then renders
        row = self._row(steer)
        if not done and row["route_progress_m"] >= self._route_len - 0.5:
            done, row["done_reason"] = True, "route_completed"
        else:
            row["done_reason"] = "timeout" if done else ""
        return StepResult(bundle, done, row)

    # ------------------------------------------------------------------------------------------- step row
    def _row(self, steer: float) -> dict[str, Any]:
        ego, corners = self._ego, ego_corners(self._ego)
        progress, deviation = self._route.update(ego.x, ego.y)
        expert, _ = self._expert.update(*self._expert_pose(self._t))
        acts = np.array([[a.x, a.y, a.yaw, a.length, a.width, a.vx, a.vy] for a in self._actors]).reshape(-1, 7)
        # the overlap test only for actors whose footprint circle reaches the ego's (the others cannot overlap)
        reach = _EGO_RADIUS_M + 0.5 * np.hypot(acts[:, 3], acts[:, 4]) + 1.0
        centre = corners.mean(axis=0)
        near = np.flatnonzero(np.hypot(acts[:, 0] - centre[0], acts[:, 1] - centre[1]) <= reach)
        hit = near[overlap_many(np.broadcast_to(corners, (len(near), 4, 2)),
                                box_corners_2d(acts[near, :2], acts[near, 3], acts[near, 4], acts[near, 2]))]
        hits = [(COLLISION_KIND.get(self._actors[k].category, "static"), self._actors[k].track_id) for k in hit]
        return {"t_s": round(self._t, 6), "x_m": ego.x, "y_m": ego.y, "yaw_rad": ego.yaw, "speed_mps": ego.vx,
                "accel_mps2": ego.ax, "yaw_rate_rps": ego.yaw_rate, "steer_rad": steer,
                "collisions": format_collisions(hits), "off_road": self._off_road(corners),
                "route_progress_m": progress, "route_length_m": self._route_len, "route_deviation_m": deviation,
                "red_light": self._red_light(), "expert_progress_m": expert, "done_reason": "",
                "ttc_s": time_to_collision(ego, acts), "speed_limit_mps": self._limits_map.at(ego.x, ego.y),
                "_actors": acts[:, :5]}

    def _off_road(self, corners: np.ndarray) -> bool:
        x0, y0 = corners.min(0) - 5.0
        x1, y1 = corners.max(0) + 5.0
        geoms = [f.geometry for layer in SEMANTIC_LAYERS["drivable_area"]
                 for f in self._vmap.query(layer, (x0, y0, x1, y1))]
        if not geoms:
            return True
        area = unary_union(geoms)
        return bool(max(area.distance(shapely.Point(*c)) for c in corners) > OFF_ROAD_TOLERANCE_M)

    def _red_light(self) -> bool:
        """True when the ego's front enters a lane connector whose light is red at the logged sweep, through its
        stop line: the connector runs the ego's way (within 45 deg) and the front is within its first
        STOP_LINE_ZONE_M (connectors of other directions overlap inside an intersection and do not count)."""
        status = self._lights.get(str(self._log.lidar_pcs.token[self._sweep(self._t)]), {})
        front = shapely.Point(self._ego.x + EGO_FRONT_M * np.cos(self._ego.yaw),
                              self._ego.y + EGO_FRONT_M * np.sin(self._ego.yaw))
        inside = set()
        for f in self._vmap.query("gen_lane_connectors_scaled_width_polygons",
                                  (front.x - 0.1, front.y - 0.1, front.x + 0.1, front.y + 0.1)):
            fid = f.props.get("lane_connector_fid", f.fid)
            if fid is not None and f.geometry.contains(front) and self._through_stop_line(int(fid), front):
                inside.add(int(fid))
        entered = inside - self._inside_red
        self._inside_red = inside
        return any(status.get(fid) == "red" for fid in entered)

    def _through_stop_line(self, fid: int, front: Any) -> bool:
        line = self._conn_lines.get(fid)
        if line is None:
            return True
        s = line.project(front)
        a, b = line.interpolate(max(0.0, s - 0.5)), line.interpolate(min(line.length, s + 0.5))
        heading = np.arctan2(b.y - a.y, b.x - a.x)
        return s <= STOP_LINE_ZONE_M and abs(float(wrap_angle(heading - self._ego.yaw))) < np.pi / 4

    def map_outline(self, route_xy: np.ndarray, margin_m: float = 40.0) -> list[np.ndarray]:
        """Exterior rings (N, 2) of the drivable area around a route, for the replay background."""
        x0, y0 = np.asarray(route_xy).min(0) - margin_m
        x1, y1 = np.asarray(route_xy).max(0) + margin_m
        window = shapely.box(x0, y0, x1, y1)
        rings = []
        for layer in SEMANTIC_LAYERS["drivable_area"]:
            for f in self._vmap.query(layer, (x0, y0, x1, y1)):
                g = f.geometry.intersection(window)
                for poly in getattr(g, "geoms", [g]):
                    if poly.geom_type == "Polygon" and not poly.is_empty:
                        rings.append(np.asarray(poly.exterior.coords)[:, :2])
        return rings

    def close(self) -> None:
        """End the episode. The read-only logs stay open and prepared (a worker reuses them across scenarios
        instead of reloading the box table and the map); `shutdown` closes them. Safe to call twice."""
        self._log = None

    def shutdown(self) -> None:
        """Close every open log and drop the per-log preparations and logged actors (map files stay cached)."""
        for log in self._logs.values():
            log.close()
        self._logs, self._log = {}, None
        self._prepared.clear()
        self._actors_cache.clear()
