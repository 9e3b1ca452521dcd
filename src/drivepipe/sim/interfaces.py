"""The closed-loop contracts shared by every simulator backend, the agent and the harness.

Frames: global = the location's UTM frame (m); ego = rear axle, x forward, y left. Times in seconds unless the
name ends in `_us`. A backend owns the world; an agent only sees `SensorBundle` inputs and returns an `Action`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from drivepipe.schema import SensorBundle
from drivepipe.world_state import ActorState, EgoKinematics


@dataclass(frozen=True)
class Action:
    """What the agent asks the ego to do for the next tick.

    steer_rad: front-wheel steering angle (rad, + = left); accel_mps2: longitudinal acceleration (m/s^2).
    waypoints: optional (T, 2) planned positions in the ego frame (m) that produced the command, for the log
        and the replay; backends drive with (steer_rad, accel_mps2).
    info: per-step records of the agent (perception outputs, planner state) copied into the step log / replay.
    pose: optional (x, y, yaw, speed) global pose the ego is PUT at instead of driving (the log-replay expert
        baseline only; a backend that cannot teleport raises).
    """

    steer_rad: float = 0.0
    accel_mps2: float = 0.0
    waypoints: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    pose: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class StepResult:
    """bundle: sensors at the new time; done: the episode ended; info: the step-log row of this tick."""

    bundle: SensorBundle | None
    done: bool
    info: dict[str, Any]


@dataclass(frozen=True)
class ClosedLoopScenario:
    """One closed-loop episode.

    scenario_id: stable id (`<log>/<token>` for logs, `<town>/<route id>` for CARLA); route_xy: (R, 2) global
    route centreline (m), start first; start: the ego at the first tick; duration_s: episode length (s);
    seed: per-scenario seed derived from (carla_eval.seed, scenario_id).
    """

    scenario_id: str
    log_name: str
    start_token: str
    start_time_us: int
    location: str
    route_xy: np.ndarray
    start: EgoKinematics
    duration_s: float
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)


class SimBackend(Protocol):
    """A simulator driven tick by tick: reset to a scenario, step with an action, close to free resources."""

    name: str

    def reset(self, scenario: ClosedLoopScenario) -> SensorBundle:
        """Start the scenario and return the first bundle."""
        ...

    def step(self, action: Action) -> StepResult:
        """Advance one tick with the action; `info` is the step-log row (see sim/scorer.py STEP_COLUMNS)."""
        ...

    def close(self) -> None:
        """Release every resource (actors, sensors, files); safe to call twice."""
        ...


class ClosedLoopAgent(Protocol):
    """The agent side of the loop (sim/agent.py ModelAgent, or a scripted agent in tests)."""

    def reset(self, scenario_meta: ClosedLoopScenario) -> None: ...

    def act(self, bundle: SensorBundle) -> Action: ...

    def close(self) -> None: ...


# ----------------------------------------------------------------------------- helpers shared by the backends
class RouteProgress:
    """Arc length along a global route polyline and the distance to it, monotone over an episode.

    The projection searches only a window ahead of the last progress so a looping route cannot jump ahead.
    """

    def __init__(self, route_xy_R2: np.ndarray, window_m: float = 30.0) -> None:
        from drivepipe.sim.controller import resample_path

        self.path, self.s = resample_path(route_xy_R2, 0.5)
        self.length_m = float(self.s[-1]) if len(self.s) else 0.0
        self.window_m = window_m
        self._progress = 0.0

    def update(self, x: float, y: float) -> tuple[float, float]:
        """(progress along the route in m, deviation from the route in m) of the ego at (x, y)."""
        from drivepipe.sim.controller import project_on_path

        if len(self.path) < 2:
            return 0.0, 0.0
        near = (self.s >= self._progress - 5.0) & (self.s <= self._progress + self.window_m)
        idx = np.flatnonzero(near) if near.sum() >= 2 else np.arange(len(self.s))
        along, lat, _ = project_on_path(self.path[idx], self.s[idx], np.array([x, y]))
        along = float(np.clip(along, 0.0, self.length_m))
        self._progress = max(self._progress, along)
        deviation = float(np.min(np.linalg.norm(self.path - [x, y], axis=1)))
        return self._progress, min(deviation, abs(lat)) if 0.0 < along < self.length_m else deviation


class EgoHistory:
    """Past ego poses (global) kept at tick rate; `sample(now, dt, steps)` gives the EgoState history arrays."""

    def __init__(self) -> None:
        self._t: list[float] = []
        self._pose: list[tuple[float, float, float]] = []

    def push(self, t_s: float, x: float, y: float, yaw: float) -> None:
        self._t.append(t_s)
        self._pose.append((x, y, yaw))

    def sample(self, dt_s: float, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """((steps + 1, 3) (x, y, yaw) in the current ego frame, oldest first; (steps + 1,) valid)."""
        from drivepipe.utils.geometry import global_to_ego_xy_yaw

        hist, valid = np.zeros((steps + 1, 3)), np.zeros(steps + 1, bool)
        if not self._t:
            return hist, valid
        t = np.asarray(self._t)
        poses = np.asarray(self._pose)
        x0, y0, yaw0 = poses[-1]
        for k in range(steps + 1):
            tq = t[-1] - (steps - k) * dt_s
            j = int(np.argmin(np.abs(t - tq)))
            if abs(t[j] - tq) <= 0.5 * dt_s + 1e-6 or k == steps:
                xy, yaw = global_to_ego_xy_yaw(poses[j:j + 1, :2], poses[j:j + 1, 2], x0, y0, yaw0)
                hist[k] = [xy[0, 0], xy[0, 1], float(yaw[0])]
                valid[k] = True
        return hist, valid


def assemble_bundle(meta: Any, ego: EgoKinematics, cameras: dict[str, Any], lidar_ego_N6: np.ndarray,
                    history: tuple[np.ndarray, np.ndarray], route_ego_R2: np.ndarray,
                    route_lights_L3: np.ndarray | None = None, privileged_boxes: Any = None) -> SensorBundle:
    """A SensorBundle for the agent from simulated sensors: inputs plus an `Annotations` that carries only the
    route (navigation is an input in closed loop); boxes, agents, map layers and the future stay empty so the
    agent cannot read ground truth. cameras: channel -> CameraFrame; lidar_ego_N6 already in the ego frame.
    route_lights_L3: the route's traffic lights ahead (schema.Annotations.route_lights). privileged_boxes: ground-
    truth Boxes (ego frame), set ONLY for the privileged baseline agent."""
    from drivepipe.schema import AgentTracks, Annotations, Boxes, EgoState, LidarSweep
    from drivepipe.utils.geometry import pose_to_transform

    hist, valid = history
    ego_state = EgoState(T_global_from_ego=pose_to_transform(ego.x, ego.y, ego.z, ego.yaw),
                         velocity_mps=np.array([ego.vx, ego.vy, 0.0]),
                         acceleration_mps2=np.array([ego.ax, ego.ay, 0.0]),
                         angular_rate_rps=np.array([0.0, 0.0, ego.yaw_rate]), history=hist, history_valid=valid)
    th = hist.shape[0] - 1
    agents = AgentTracks(np.zeros(0, np.int64), np.zeros((0, th + 1, 3)), np.zeros((0, th + 1), bool),
                         np.zeros((0, 1, 3)), np.zeros((0, 1), bool))
    lights = np.zeros((0, 3)) if route_lights_L3 is None else np.asarray(route_lights_L3, np.float64).reshape(-1, 3)
    ann = Annotations(boxes=Boxes.empty() if privileged_boxes is None else privileged_boxes, agents=agents,
                      map_layers={}, ego_future=np.zeros((1, 3)), ego_future_valid=np.zeros(1, bool),
                      route=np.asarray(route_ego_R2, dtype=np.float64), route_lights=lights)
    lidar = LidarSweep(points=np.ascontiguousarray(lidar_ego_N6, dtype=np.float32), timestamp_us=meta.timestamp_us)
    return SensorBundle(meta=meta, cameras=cameras, lidar=lidar, ego=ego_state, annotations=ann)


def actors_to_boxes(actors: list[ActorState], ego: EgoKinematics) -> Any:
    """Ground-truth schema.Boxes of actors in the ego frame (the privileged baseline's perception)."""
    from drivepipe.schema import CATEGORY_INDEX, Boxes
    from drivepipe.utils.geometry import global_to_ego_xy_yaw

    if not actors:
        return Boxes.empty()
    a = np.array([[o.x, o.y, o.z, o.length, o.width, o.height, o.yaw, o.vx, o.vy] for o in actors])
    xy, yaw = global_to_ego_xy_yaw(a[:, :2], a[:, 6], ego.x, ego.y, ego.yaw)
    c, s = np.cos(ego.yaw), np.sin(ego.yaw)
    vel = np.stack([c * a[:, 7] + s * a[:, 8], -s * a[:, 7] + c * a[:, 8]], 1)
    return Boxes(np.column_stack([xy, a[:, 2]]), a[:, 3:6], np.asarray(yaw), vel,
                 np.array([CATEGORY_INDEX[o.category] for o in actors], np.int64),
                 np.array([o.track_id for o in actors], np.int64))
