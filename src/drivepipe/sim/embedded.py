"""`EmbeddedBackend`: nuPlan-format log replay with a simulated ego, re-rendered sensors and no external process.

Scenario = a val-split window of a log (see `select_scenarios`). Every `carla_eval.step_s` tick:
1. the ego moves by the agent's action on the kinematic bicycle (sim/controller.py);
2. agents: `replay` puts every logged box of the sweep nearest in time where the log has it; `idm` lets the
   vehicles present at the start drive along their own logged path with IDM (nuPlan's reactive-agent values),
   slowing for the ego when it is on their path; other objects replay;
3. the six cameras and the lidar are re-rendered from the SIMULATED ego pose with the synthetic world's renderers
   (map from MapsRoot + current agents; rig from the log's calibrations, cameras scaled down to at most
   data.synthetic.image_width), the lidar moved into the ego frame with the log's T_ego_from_lidar, as the
   reader does, and assembled into a SensorBundle so perception runs inside the loop;
4. a step-log row (sim/scorer.py STEP_COLUMNS) is computed: collisions (ego footprint vs agent footprints),
   off-drivable-area (a corner > 0.3 m outside), route progress/deviation, red light (entering a lane connector
   whose light is red in the log's traffic_light_status), expert progress.
The route is the logged expert path from the start (up to duration + ROUTE_EXTRA_S); route_length_m (for route
completion) is the length the expert drove within the scenario, 0 when it stood still (then RC = 100).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.ops import unary_union

from drivepipe.config import Config
from drivepipe.idm import idm_accel
from drivepipe.mapdata import SEMANTIC_LAYERS
from drivepipe.schema import CATEGORIES, BundleMeta, CameraFrame
from drivepipe.sim.controller import ControlLimits, propagate_bicycle
from drivepipe.sim.interfaces import Action, ClosedLoopScenario, EgoHistory, RouteProgress, StepResult, assemble_bundle
from drivepipe.sim.planner import NUPLAN_REACTIVE_IDM, boxes_overlap
from drivepipe.sim.scorer import format_collisions
from drivepipe.utils.geometry import box_corners_2d, global_to_ego_xy_yaw, quat_to_yaw
from drivepipe.vehicle import EGO_FRONT_M, EGO_REAR_M, EGO_WIDTH_M
from drivepipe.world.conditions import conditions_from_row
from drivepipe.world_state import ActorState, EgoKinematics, WorldSnapshot

OFF_ROAD_TOLERANCE_M = 0.3
ROUTE_EXTRA_S = 10.0
MIN_DURATION_S = 1.0
STATIONARY_ROUTE_M = 1.0
REACTIVE_TARGET_MPS = 10.0  # nuPlan's reactive IDM target speed
COLLISION_KIND = {"vehicle": "vehicle", "pedestrian": "pedestrian", "bicycle": "pedestrian"}  # else static


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
        self._lights: dict[str, dict[int, str]] = {}
        self._limits = ControlLimits()

    # ------------------------------------------------------------------------------------------- data access
    def _open(self, log_name: str) -> Any:
        from drivepipe.nuplan.db import NuplanLog
        from drivepipe.nuplan.layout import discover
        from drivepipe.nuplan.maps import MapsRoot

        if self._layout is None:
            self._layout = discover(self.data_root)
            self._maps = MapsRoot(self._layout.maps_root)
        if self._log is not None and self._log.log_name == log_name:
            return self._log
        self.close()
        db = {p.stem: p for p in self._layout.db_files}.get(log_name)
        if db is None:
            raise FileNotFoundError(f"{self.data_root}: no log {log_name}.db")
        self._log = NuplanLog(db, self._layout.sensor_root, self._maps, self.cfg.data.missing_blob_policy)
        return self._log

    def val_keys(self) -> list[str]:
        """`<log>/<token>` keys of the held-out TEST split (whole logs never seen in training or checkpoint
        selection): from the cache header at cache_dir when there is one, else derived from the logs with the same
        deterministic rule (preprocess/windows.make_windows); when the logs are too short for full windows, every
        sweep of the test logs is a candidate."""
        if self.cache_dir is not None and (Path(self.cache_dir) / "data.mdb").is_file():
            from drivepipe.cache.lmdb_store import LmdbReader

            return sorted(LmdbReader(self.cache_dir).keys("test"))
        from drivepipe.nuplan.layout import discover
        from drivepipe.nuplan.scenarios import enumerate_scenarios
        from drivepipe.preprocess.windows import assign_log_splits, make_windows

        scenarios, location, span = [], {}, {}
        for db in discover(self.data_root).db_files:
            log = self._open(db.stem)
            scenarios += enumerate_scenarios(log)
            location[log.log_name] = log.location
            span[log.log_name] = (int(log.lidar_pcs.timestamp_us[0]), int(log.lidar_pcs.timestamp_us[-1]))
        keys = [w.key for w in make_windows(scenarios, self.cfg.preprocess, location, span) if w.split == "test"]
        if not keys:
            p = self.cfg.preprocess
            test_logs = set(assign_log_splits(location, p.val_logs, p.test_logs)["test"])
            keys = [f"{s.log_name}/{s.token}" for s in scenarios if s.log_name in test_logs]
        return sorted(keys)

    def select_scenarios(self, num: int, seed_of: Any) -> list[ClosedLoopScenario]:
        """`num` val windows evenly spaced over the sorted keys (deterministic) as closed-loop scenarios; a key
        with less than MIN_DURATION_S of log after it is replaced by the next usable key."""
        keys = self.val_keys()
        if not keys:
            raise ValueError(f"{self.data_root}: no val-split scenarios for closed-loop evaluation")
        picks = np.round(np.linspace(0, len(keys) - 1, min(num, len(keys)))).astype(int).tolist()
        out: list[ClosedLoopScenario] = []
        used: set[int] = set()
        for i in picks:
            for j in [*range(i, len(keys)), *range(0, i)]:
                if j in used:
                    continue
                used.add(j)
                try:
                    out.append(self.make_scenario(keys[j], seed_of(keys[j])))
                    break
                except ValueError:
                    continue
        return out

    def make_scenario(self, key: str, seed: int) -> ClosedLoopScenario:
        """The scenario that starts at the sweep of `key` = `<log>/<token>`."""
        log_name, token = key.rsplit("/", 1)
        log = self._open(log_name)
        pcs = log.lidar_pcs
        i = log.token_index[token]
        remaining = (int(pcs.timestamp_us[-1]) - int(pcs.timestamp_us[i])) / 1e6
        duration = min(self.cfg.carla_eval.duration_s, remaining - self.cfg.carla_eval.step_s)
        if duration < MIN_DURATION_S:
            raise ValueError(f"{key}: only {remaining:.1f} s of log left after the start")
        end_t = int(pcs.timestamp_us[i]) + int((duration + ROUTE_EXTRA_S) * 1e6)
        sel = np.flatnonzero((pcs.timestamp_us >= pcs.timestamp_us[i]) & (pcs.timestamp_us <= end_t))
        route = pcs.xyz[sel, :2]
        start = EgoKinematics(x=float(pcs.xyz[i, 0]), y=float(pcs.xyz[i, 1]), yaw=quat_to_yaw(pcs.quat[i]),
                              vx=float(max(0.0, pcs.velocity[i, 0])), z=float(pcs.xyz[i, 2]))
        return ClosedLoopScenario(key, log_name, token, int(pcs.timestamp_us[i]), log.location, route, start,
                                  float(duration), int(seed))

    # ---------------------------------------------------------------------------------------------- episode
    def reset(self, scenario: ClosedLoopScenario) -> Any:
        """See base class."""
        log = self.prepare(scenario.log_name)
        self._sc = scenario
        self._t, self._ego = 0.0, scenario.start
        self._route = RouteProgress(scenario.route_xy)
        self._expert = RouteProgress(scenario.route_xy)
        expert_end = self._expert_pose(scenario.duration_s)
        self._route_len = RouteProgress(scenario.route_xy).update(*expert_end)[0]
        if self._route_len < STATIONARY_ROUTE_M:
            self._route_len = 0.0
        self._history = EgoHistory()
        self._inside_red: set[int] = set()
        self._idm = _IdmAgents(log, self._sweep(0.0)) if self.cfg.carla_eval.agents == "idm" else None
        return self._bundle()

    def prepare(self, log_name: str) -> Any:
        """Open a log with its map, render rig and traffic lights; returns the NuplanLog."""
        log = self._open(log_name)
        self._vmap = log.load_map()
        self._rig = log_rig(log, self.cfg.data.synthetic.image_width)
        self._lights = log.traffic_lights()
        return log

    def _sweep(self, t_s: float) -> int:
        """Row of the logged sweep nearest to scenario time t_s."""
        ts = self._log.lidar_pcs.timestamp_us
        return int(np.argmin(np.abs(ts - (self._sc.start_time_us + t_s * 1e6))))

    def _expert_pose(self, t_s: float) -> tuple[float, float]:
        xyz = self._log.lidar_pcs.xyz[self._sweep(t_s)]
        return float(xyz[0]), float(xyz[1])

    def actors_at(self, index: int) -> list[ActorState]:
        """The logged boxes of sweep `index` as ActorStates (global frame)."""
        b = self._log.boxes
        rows = b.rows(index)
        return [ActorState(track_id=int(b.track_id[k]), category=CATEGORIES[int(b.category[k])],
                           x=float(b.center[k, 0]), y=float(b.center[k, 1]), z=float(b.center[k, 2]),
                           yaw=float(b.yaw[k]), length=float(b.size[k, 0]), width=float(b.size[k, 1]),
                           height=float(b.size[k, 2]), vx=float(b.velocity[k, 0]), vy=float(b.velocity[k, 1]))
                for k in range(rows.start, rows.stop)]

    def render(self, index: int, ego: EgoKinematics, actors: list[ActorState], timestamp_us: int
               ) -> tuple[dict, np.ndarray]:
        """Cameras (channel -> CameraFrame) and lidar (N, 6) in the EGO frame for an ego pose and agents
        (after `prepare`); `index` is the logged sweep whose traffic lights apply; timestamp_us seeds lidar noise."""
        from drivepipe.world.render_camera import render_cameras
        from drivepipe.world.render_lidar import render_lidar

        ts = int(timestamp_us)
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
        cams, lidar = self.render(index, self._ego, self._actors, ts)
        self._history.push(self._t, self._ego.x, self._ego.y, self._ego.yaw)
        pre = self.cfg.preprocess
        route, _ = global_to_ego_xy_yaw(self._sc.route_xy, np.zeros(len(self._sc.route_xy)), self._ego.x,
                                        self._ego.y, self._ego.yaw)
        meta = BundleMeta(self._sc.log_name, str(self._log.lidar_pcs.token[index]), ts, self._sc.location)
        return assemble_bundle(meta, self._ego, cams, lidar, self._history.sample(pre.traj_dt_s, pre.history_steps),
                               route)

    def step(self, action: Action) -> StepResult:
        """See base class."""
        lim, dt = self._limits, self.cfg.carla_eval.step_s
        steer = float(np.clip(action.steer_rad, -lim.max_steer_rad, lim.max_steer_rad))
        accel = float(np.clip(action.accel_mps2, -lim.max_decel_mps2, lim.max_accel_mps2))
        self._ego = propagate_bicycle(self._ego, steer, accel, dt)
        self._t += dt
        done = self._t >= self._sc.duration_s - 1e-6
        bundle = self._bundle()  # moves the agents to the new time, then renders
        row = self._row(steer)
        row["done_reason"] = "timeout" if done else ""
        return StepResult(bundle, done, row)

    # ------------------------------------------------------------------------------------------- step row
    def _row(self, steer: float) -> dict[str, Any]:
        ego, corners = self._ego, ego_corners(self._ego)
        progress, deviation = self._route.update(ego.x, ego.y)
        expert, _ = self._expert.update(*self._expert_pose(self._t))
        hits = [(COLLISION_KIND.get(a.category, "static"), a.track_id) for a in self._actors
                if boxes_overlap(corners, box_corners_2d(np.array([[a.x, a.y]]), np.array([a.length]),
                                                    np.array([a.width]), np.array([a.yaw]))[0])]
        boxes = np.array([[a.x, a.y, a.yaw, a.length, a.width] for a in self._actors]).reshape(-1, 5)
        return {"t_s": round(self._t, 6), "x_m": ego.x, "y_m": ego.y, "yaw_rad": ego.yaw, "speed_mps": ego.vx,
                "accel_mps2": ego.ax, "yaw_rate_rps": ego.yaw_rate, "steer_rad": steer,
                "collisions": format_collisions(hits), "off_road": self._off_road(corners),
                "route_progress_m": progress, "route_length_m": self._route_len, "route_deviation_m": deviation,
                "red_light": self._red_light(), "expert_progress_m": expert, "done_reason": "", "_actors": boxes}

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
        """True when the ego's front enters a lane connector whose light is red at the logged sweep."""
        status = self._lights.get(str(self._log.lidar_pcs.token[self._sweep(self._t)]), {})
        front = shapely.Point(self._ego.x + EGO_FRONT_M * np.cos(self._ego.yaw),
                              self._ego.y + EGO_FRONT_M * np.sin(self._ego.yaw))
        inside = set()
        for f in self._vmap.query("gen_lane_connectors_scaled_width_polygons",
                                  (front.x - 0.1, front.y - 0.1, front.x + 0.1, front.y + 0.1)):
            fid = f.props.get("lane_connector_fid", f.fid)
            if fid is not None and f.geometry.contains(front):
                inside.add(int(fid))
        entered = inside - self._inside_red
        self._inside_red = inside
        return any(status.get(fid) == "red" for fid in entered)

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
        """Close the open log (maps stay cached). Safe to call twice."""
        if self._log is not None:
            self._log.close()
            self._log = None


class _IdmAgents:
    """Reactive vehicles (nuPlan's IDM: target 10 m/s, min gap 1 m, headway 1.5 s, accel 1.0, decel 2.0 m/s^2):
    each vehicle present at the start drives along its own logged path, slowing for the ego when the ego is
    within 2 m of that path ahead of it; vehicles that appear later and all other objects replay the log."""

    def __init__(self, log: Any, index0: int) -> None:
        b = log.boxes
        rows0 = b.rows(index0)
        self.paths: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.state: dict[int, list[float]] = {}
        for k in range(rows0.start, rows0.stop):
            if CATEGORIES[int(b.category[k])] != "vehicle":
                continue
            tid = int(b.track_id[k])
            sel = np.flatnonzero(b.track_id == tid)
            sel = sel[np.searchsorted(b.offsets, sel, side="right") - 1 >= index0]
            xy = b.center[sel, :2]
            s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
            if len(xy) < 2 or s[-1] < 1.0:
                continue
            self.paths[tid] = (xy, s)
            self.state[tid] = [0.0, float(np.hypot(*b.velocity[k, :2]))]

    def actors(self, logged: list[ActorState], t_s: float, ego: EgoKinematics, dt_s: float) -> list[ActorState]:
        out = []
        for a in logged:
            if a.track_id not in self.paths:
                out.append(a)
                continue
            xy, s = self.paths[a.track_id]
            st = self.state[a.track_id]
            d = np.linalg.norm(xy - [ego.x, ego.y], axis=1)
            k = int(np.argmin(d))
            gap = s[k] - st[0] - a.length / 2 - EGO_REAR_M if d[k] < 2.0 and s[k] > st[0] else np.inf
            acc = float(idm_accel(st[1], REACTIVE_TARGET_MPS, gap, ego.vx, NUPLAN_REACTIVE_IDM))
            st[1] = max(0.0, st[1] + acc * dt_s)
            st[0] = min(s[-1], st[0] + st[1] * dt_s)
            x, y = np.interp(st[0], s, xy[:, 0]), np.interp(st[0], s, xy[:, 1])
            j = min(int(np.searchsorted(s, st[0])), len(s) - 1)
            h = xy[min(j + 1, len(s) - 1)] - xy[max(j - 1, 0)]
            yaw = float(np.arctan2(h[1], h[0])) if np.hypot(*h) > 1e-3 else a.yaw
            out.append(replace(a, x=float(x), y=float(y), yaw=yaw, vx=st[1] * np.cos(yaw), vy=st[1] * np.sin(yaw)))
        return out
