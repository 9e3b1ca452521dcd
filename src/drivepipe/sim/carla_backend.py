"""`CarlaBackend`: the same closed loop on a CARLA 0.9.16 server (never available on the CI machines).

`import carla` happens only inside this backend. Guards for CARLA's known failure modes:
a short availability probe with bounded retries, a pinned client/server version, synchronous mode with
`fixed_delta_seconds`, a timeout on every blocking call (`client.set_timeout`, `world.tick(timeout)`, sensor
queues), and a teardown that always restores the original settings and stops then destroys every sensor and
the ego, even after a failure mid-route.

Frames: CARLA is left-handed (x forward, y RIGHT, z up, yaw clockwise in degrees); ours is right-handed (y left).
Conversion: y -> -y, yaw -> -yaw. The CARLA vehicle origin is taken as the ego origin (the rear-axle offset of
a few metres is not modelled).
"""

from __future__ import annotations

import importlib
import logging
import math
import queue
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drivepipe.config import Config
from drivepipe.errors import BackendUnavailable
from drivepipe.sim.controller import ControlLimits
from drivepipe.sim.interfaces import (
    Action,
    ClosedLoopScenario,
    EgoHistory,
    RouteProgress,
    StepResult,
    actors_to_boxes,
    assemble_bundle,
)
from drivepipe.world_state import ActorState, EgoKinematics

log = logging.getLogger(__name__)
CLIENT_VERSION = "0.9.16"
EGO_BLUEPRINT = "vehicle.lincoln.mkz_2020"


@dataclass(frozen=True)
class CarlaRoute:
    """One leaderboard route: waypoints (N, 3) in OUR frame (y already flipped)."""

    route_id: str
    town: str
    waypoints: np.ndarray


def parse_routes_xml(path: str | Path) -> list[CarlaRoute]:
    """Leaderboard-style `<routes><route id town><waypoints><position x y z/>...` (1.x `<waypoint>` also read)."""
    root = ET.parse(path).getroot()
    routes = []
    for r in root.iter("route"):
        pts = [(float(p.get("x", 0)), -float(p.get("y", 0)), float(p.get("z", 0)))
               for p in list(r.iter("position")) + list(r.iter("waypoint"))]
        if len(pts) < 2:
            raise ValueError(f"{path}: route {r.get('id')} has fewer than 2 waypoints")
        routes.append(CarlaRoute(str(r.get("id")), str(r.get("town", "")), np.asarray(pts)))
    return routes


def routes_to_scenarios(routes: list[CarlaRoute], duration_s: float, seed_of: Any) -> list[ClosedLoopScenario]:
    """Closed-loop scenarios from routes; `seed_of(scenario_id) -> int` gives the per-scenario seed."""
    out = []
    for r in routes:
        d = r.waypoints[1, :2] - r.waypoints[0, :2]
        start = EgoKinematics(x=float(r.waypoints[0, 0]), y=float(r.waypoints[0, 1]), yaw=float(np.arctan2(d[1], d[0])))
        sid = f"{r.town}/{r.route_id}"
        out.append(ClosedLoopScenario(sid, r.town, r.route_id, 0, r.town, r.waypoints[:, :2], start, duration_s,
                                      seed_of(sid)))
    return out


def _rotation_from_cam(T_ego_from_cam: np.ndarray) -> tuple[float, float, float]:
    """(pitch, yaw, roll) degrees of a CARLA camera (x fwd, y right, z up) for an OpenCV camera in our ego frame."""
    R = T_ego_from_cam[:3, :3]
    flip = np.array([1.0, -1.0, 1.0])
    fwd, right, up = R[:, 2] * flip, R[:, 0] * flip, -R[:, 1] * flip
    yaw = math.degrees(math.atan2(fwd[1], fwd[0]))
    pitch = math.degrees(math.asin(float(np.clip(fwd[2], -1, 1))))
    roll = math.degrees(math.atan2(-right[2], up[2]))
    return pitch, yaw, roll


class CarlaBackend:
    """SimBackend on a CARLA server. See the module docstring; `carla_module` lets tests inject a stand-in."""

    name = "carla"

    def __init__(self, cfg: Config, carla_module: Any = None, rig: Any = None) -> None:
        self._cfg = cfg
        self._rig = rig
        self._srv = cfg.carla_eval.carla
        self._carla = carla_module
        self._client: Any = None
        self._world: Any = None
        self._original_settings: Any = None
        self._ego: Any = None
        self._sensors: list[Any] = []
        self._queues: dict[str, queue.Queue] = {}
        self._collisions: queue.Queue = queue.Queue()
        self._limits = ControlLimits()
        self.privileged = False  # set by the harness for the privileged baseline: ground-truth boxes in the bundle
        self._tick_actors: list[ActorState] | None = None

    # ------------------------------------------------------------------------------------------- connection
    def _module(self) -> Any:
        if self._carla is None:
            try:
                self._carla = importlib.import_module("carla")
            except ImportError as exc:
                raise BackendUnavailable(f"the CARLA client is not installed (pip install carla=={CLIENT_VERSION})"
                                         ) from exc
        return self._carla

    def probe(self) -> None:
        """Connect with a short timeout; raise BackendUnavailable when no (matching) server answers."""
        carla = self._module()
        host, port, wait = self._srv.host, self._srv.port, self._srv.probe_timeout_s
        last: Exception | None = None
        for _ in range(self._srv.retries + 1):
            try:
                client = carla.Client(host, port)
                client.set_timeout(wait)
                server_version = str(client.get_server_version())
                break
            except RuntimeError as exc:  # the 0.9.16 client raises a plain RuntimeError on time-out
                last = exc
        else:
            raise BackendUnavailable(f"no CARLA server answered at {host}:{port} within {wait:g}s "
                                     f"({self._srv.retries + 1} tries; last error: {last})")
        client_version = str(getattr(client, "get_client_version", lambda: CLIENT_VERSION)())
        if _short(server_version) != _short(client_version) or _short(client_version) != CLIENT_VERSION:
            raise BackendUnavailable(f"CARLA version mismatch at {host}:{port}: server {server_version}, client "
                                     f"{client_version}; this pipeline pins {CLIENT_VERSION}")
        client.set_timeout(self._srv.timeout_s)
        self._client = client

    # ---------------------------------------------------------------------------------------------- episode
    def reset(self, scenario: ClosedLoopScenario) -> Any:
        """See base class. Loads the town if needed, enters synchronous mode, spawns the ego and its sensors."""
        self.close()
        if self._client is None:
            self.probe()
        self._scenario = scenario
        world = self._client.get_world()
        if scenario.location and scenario.location not in str(world.get_map().name):
            world = self._client.load_world(scenario.location)
        self._world = world
        self._original_settings = world.get_settings()
        settings = world.get_settings()
        settings.synchronous_mode = True
        settings.fixed_delta_seconds = self._srv.fixed_delta_s
        world.apply_settings(settings)
        self._spawn(scenario)
        self._t = 0.0
        self._route = RouteProgress(scenario.route_xy)
        self._history = EgoHistory()
        self._seen_lights: set[int] = set()
        self._tick()
        return self._bundle()

    def _spawn(self, scenario: ClosedLoopScenario) -> None:
        carla = self._carla
        lib = self._world.get_blueprint_library()
        s = scenario.start
        tf = carla.Transform(carla.Location(x=s.x, y=-s.y, z=0.5), carla.Rotation(yaw=-math.degrees(s.yaw)))
        self._ego = self._world.spawn_actor(lib.find(EGO_BLUEPRINT), tf)
        if self._rig is None:
            from drivepipe.world.rig import default_rig

            self._rig = default_rig(self._cfg.data.synthetic.image_width, self._cfg.data.synthetic.image_height)
        pre, rig = self._cfg.preprocess, self._rig
        for ch in pre.cameras:
            cal = rig.cameras[ch]
            bp = lib.find("sensor.camera.rgb")
            bp.set_attribute("image_size_x", str(cal.width))
            bp.set_attribute("image_size_y", str(cal.height))
            bp.set_attribute("fov", str(math.degrees(2 * math.atan(cal.width / (2 * cal.intrinsic[0, 0])))))
            self._attach(ch, bp, cal.T_ego_from_cam, _rotation_from_cam(cal.T_ego_from_cam))
        lidar_bp = lib.find("sensor.lidar.ray_cast")
        lidar_bp.set_attribute("range", str(self._cfg.data.synthetic.lidar_max_range_m))
        lidar_bp.set_attribute("rotation_frequency", str(1.0 / self._srv.fixed_delta_s))
        self._attach("LIDAR", lidar_bp, rig.T_ego_from_lidar, (0.0, 0.0, 0.0))
        coll = self._world.spawn_actor(lib.find("sensor.other.collision"), carla.Transform(), attach_to=self._ego)
        self._sensors.append(coll)
        coll.listen(self._collisions.put)

    def _attach(self, name: str, bp: Any, T_ego_from_sensor: np.ndarray, pyr: tuple[float, float, float]) -> None:
        carla = self._carla
        t = T_ego_from_sensor[:3, 3]
        tf = carla.Transform(carla.Location(x=float(t[0]), y=float(-t[1]), z=float(t[2])),
                             carla.Rotation(pitch=pyr[0], yaw=pyr[1], roll=pyr[2]))
        sensor = self._world.spawn_actor(bp, tf, attach_to=self._ego)
        self._sensors.append(sensor)
        q: queue.Queue = queue.Queue()
        self._queues[name] = q
        sensor.listen(q.put)

    def _tick(self) -> int:
        """One synchronous server tick with a timeout (a hung server raises instead of blocking forever)."""
        self._tick_actors: list[ActorState] | None = None  # `_actors` asks the server again after a tick
        return int(self._world.tick(self._srv.timeout_s))

    def step(self, action: Action) -> StepResult:
        """See base class. Applies the action for step_s (several fixed_delta ticks) and logs the step row."""
        carla = self._carla
        lim = self._limits
        control = carla.VehicleControl(throttle=float(np.clip(action.accel_mps2 / lim.max_accel_mps2, 0, 1)),
                                       brake=float(np.clip(-action.accel_mps2 / lim.max_decel_mps2, 0, 1)),
                                       steer=float(np.clip(-action.steer_rad / lim.max_steer_rad, -1, 1)))
        self._ego.apply_control(control)
        n = max(1, round(self._cfg.carla_eval.step_s / self._srv.fixed_delta_s))
        for _ in range(n):
            self._tick()
        self._t += n * self._srv.fixed_delta_s
        row = self._row(action)
        done = self._t >= self._scenario.duration_s - 1e-9 or row["route_progress_m"] >= self._route.length_m
        row["done_reason"] = ("route_completed" if row["route_progress_m"] >= self._route.length_m else
                              "timeout" if done else "")
        return StepResult(self._bundle(), done, row)

    def _ego_state(self) -> EgoKinematics:
        tf, vel = self._ego.get_transform(), self._ego.get_velocity()
        yaw = -math.radians(tf.rotation.yaw)
        vx_g, vy_g = vel.x, -vel.y
        c, s = math.cos(yaw), math.sin(yaw)
        return EgoKinematics(x=tf.location.x, y=-tf.location.y, yaw=yaw, vx=c * vx_g + s * vy_g,
                             vy=-s * vx_g + c * vy_g, z=0.0)

    def _actors(self) -> list[ActorState]:
        """The server's other vehicles (two-wheelers as bicycles) and walkers, in our frame: centre, size from the
        bounding box extent, yaw and global velocity (CARLA's y and yaw flipped); read once per tick."""
        if self._tick_actors is not None:
            return self._tick_actors
        out = []
        for a in self._world.get_actors():
            kind = str(a.type_id)
            if a.id == self._ego.id or not kind.startswith(("vehicle.", "walker.")):
                continue
            wheels = str(getattr(a, "attributes", {}).get("number_of_wheels", "4"))
            category = "pedestrian" if kind.startswith("walker.") else "bicycle" if wheels == "2" else "vehicle"
            tf, vel, ext = a.get_transform(), a.get_velocity(), a.bounding_box.extent
            out.append(ActorState(track_id=int(a.id), category=category, x=tf.location.x, y=-tf.location.y,
                                  z=float(ext.z), yaw=-math.radians(tf.rotation.yaw), length=2 * ext.x,
                                  width=2 * ext.y, height=2 * ext.z, vx=vel.x, vy=-vel.y))
        self._tick_actors = out
        return out

    def _row(self, action: Action) -> dict[str, Any]:
        from drivepipe.sim.scorer import format_collisions
        from drivepipe.sim.stepmetrics import time_to_collision

        ego = self._ego_state()
        progress, deviation = self._route.update(ego.x, ego.y)
        acts = np.array([[a.x, a.y, a.yaw, a.length, a.width, a.vx, a.vy] for a in self._actors()]).reshape(-1, 7)
        hits = []
        while not self._collisions.empty():
            ev = self._collisions.get_nowait()
            kind = str(ev.other_actor.type_id)
            hits.append(("vehicle" if kind.startswith("vehicle") else
                         "pedestrian" if kind.startswith("walker") else "static", int(ev.other_actor.id)))
        wp = self._world.get_map().get_waypoint(self._ego.get_location(), project_to_road=False)
        red = False
        if self._ego.is_at_traffic_light() and str(self._ego.get_traffic_light_state()).endswith("Red"):
            light = self._ego.get_traffic_light()
            red = ego.vx > 0.5 and light is not None and light.id not in self._seen_lights
            if red:
                self._seen_lights.add(light.id)
        return {"t_s": self._t, "x_m": ego.x, "y_m": ego.y, "yaw_rad": ego.yaw, "speed_mps": ego.vx,
                "accel_mps2": action.accel_mps2, "yaw_rate_rps": 0.0, "steer_rad": action.steer_rad,
                "collisions": format_collisions(hits), "off_road": wp is None, "route_progress_m": progress,
                "route_length_m": self._route.length_m, "route_deviation_m": deviation, "red_light": red,
                "expert_progress_m": None, "done_reason": "", "ttc_s": time_to_collision(ego, acts),
                "speed_limit_mps": self._speed_limit()}

    def _speed_limit(self) -> float | None:
        """The server's speed limit for the ego (km/h -> m/s); None when the client cannot say."""
        try:
            return float(self._ego.get_speed_limit()) / 3.6
        except Exception:  # noqa: BLE001 - optional: a missing limit is scored as no violation
            return None

    def _route_lights(self, ego: EgoKinematics, route_ego: np.ndarray) -> np.ndarray:
        """The light the server says governs the ego (is_at_traffic_light), placed at the route point nearest the
        light (ego frame) with its status code (schema.LIGHT_CODES); (0, 3) when none."""
        from drivepipe.schema import LIGHT_CODES
        from drivepipe.utils.geometry import global_to_ego_xy_yaw

        if len(route_ego) == 0 or not self._ego.is_at_traffic_light():
            return np.zeros((0, 3))
        light = self._ego.get_traffic_light()
        state = str(self._ego.get_traffic_light_state()).rsplit(".", 1)[-1].lower()
        if light is None:
            return np.zeros((0, 3))
        loc = light.get_transform().location
        xy, _ = global_to_ego_xy_yaw(np.array([[loc.x, -loc.y]]), np.zeros(1), ego.x, ego.y, ego.yaw)
        from drivepipe.sim.controller import resample_path

        dense, _ = resample_path(route_ego, 1.0)
        ahead = dense[dense[:, 0] > 0.0] if len(dense) else dense
        if len(ahead) == 0:
            return np.zeros((0, 3))
        k = int(np.argmin(np.linalg.norm(ahead - xy[0], axis=1)))
        code = LIGHT_CODES.index(state) if state in LIGHT_CODES else LIGHT_CODES.index("unknown")
        return np.array([[ahead[k, 0], ahead[k, 1], code]])

    def _bundle(self) -> Any:
        from drivepipe.schema import BundleMeta, CameraFrame

        ego = self._ego_state()
        self._history.push(self._t, ego.x, ego.y, ego.yaw)
        pre = self._cfg.preprocess
        frame_ts = int(self._scenario.start_time_us + self._t * 1e6)
        cams = {}
        for ch in pre.cameras:
            img = self._queues[ch].get(timeout=self._srv.timeout_s)
            bgra = np.frombuffer(img.raw_data, dtype=np.uint8).reshape(img.height, img.width, 4)
            cams[ch] = CameraFrame(self._rig.cameras[ch], np.ascontiguousarray(bgra[:, :, 2::-1]), frame_ts)
        raw = self._queues["LIDAR"].get(timeout=self._srv.timeout_s)
        pts = np.frombuffer(raw.raw_data, dtype=np.float32).reshape(-1, 4)
        xyz = np.stack([pts[:, 0], -pts[:, 1], pts[:, 2]], 1) @ self._rig.T_ego_from_lidar[:3, :3].T \
            + self._rig.T_ego_from_lidar[:3, 3]
        lidar = np.zeros((len(pts), 6), np.float32)
        lidar[:, :3], lidar[:, 3] = xyz, pts[:, 3] * 255.0
        from drivepipe.utils.geometry import global_to_ego_xy_yaw

        route, _ = global_to_ego_xy_yaw(self._scenario.route_xy, np.zeros(len(self._scenario.route_xy)),
                                        ego.x, ego.y, ego.yaw)
        meta = BundleMeta(self._scenario.log_name, f"{int(self._t * 1e6):016x}", frame_ts, self._scenario.location)
        hist = self._history.sample(pre.traj_dt_s, pre.history_steps)
        gt = actors_to_boxes(self._actors(), ego) if self.privileged else None
        return assemble_bundle(meta, ego, cams, lidar, hist, route, self._route_lights(ego, route), gt)

    def close(self) -> None:
        """Stop then destroy every sensor, destroy the ego, restore the original settings. Idempotent."""
        for sensor in self._sensors:
            for call in ("stop", "destroy"):
                try:
                    getattr(sensor, call)()
                except Exception:  # noqa: BLE001 - teardown must go on; the server may already be gone
                    pass
        self._sensors, self._queues, self._collisions = [], {}, queue.Queue()
        if self._ego is not None:
            try:
                self._ego.destroy()
            except Exception:  # noqa: BLE001
                pass
            self._ego = None
        if self._world is not None and self._original_settings is not None:
            try:
                self._world.apply_settings(self._original_settings)
            except Exception as exc:  # noqa: BLE001 - report, but do not mask the error that got us here
                log.warning("could not restore the CARLA settings: %s: %s", type(exc).__name__, exc)
            self._original_settings = None


def _short(version: str) -> str:
    """'0.9.16-12-gabc' -> '0.9.16'."""
    return version.strip().split("-")[0]
