"""Ego motion model and low-level tracking: a kinematic bicycle about the rear axle, pure-pursuit or LQR
steering, and PI speed control, all with actuator limits.

Ego parameters are the nuPlan Pacifica (`drivepipe.vehicle`). Paths are (N, 2) in the ego frame (m).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from drivepipe.vehicle import WHEELBASE_M, kinematic_bicycle
from drivepipe.world_state import EgoKinematics


@dataclass(frozen=True)
class ControlLimits:
    """Actuator limits: steering angle (rad) and rate (rad/s), acceleration and braking (m/s^2)."""

    max_steer_rad: float = 0.6
    max_steer_rate_rps: float = 1.0
    max_accel_mps2: float = 2.4
    max_decel_mps2: float = 5.0


def propagate_bicycle(ego: EgoKinematics, steer_rad: float, accel_mps2: float, dt_s: float) -> EgoKinematics:
    """One step of the rear-axle kinematic bicycle (semi-implicit: speed first, then pose on the mean speed).

    Speed is clamped at 0 (no reversing). Returns the new state with ax, ay (ego frame) and yaw_rate filled.
    """
    v0 = float(ego.vx)
    x, y, yaw, v1, yaw_rate = kinematic_bicycle(ego.x, ego.y, ego.yaw, v0, accel_mps2, steer_rad, dt_s)
    return EgoKinematics(x=x, y=y, yaw=yaw, vx=v1, vy=0.0, ax=(v1 - v0) / dt_s,
                         ay=0.5 * (v0 + v1) * yaw_rate, yaw_rate=yaw_rate, z=ego.z)


def resample_path(path_N2: np.ndarray, spacing_m: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Path resampled at a fixed arc-length spacing -> ((M, 2) points, (M,) arc length from the first point)."""
    path = np.asarray(path_N2, dtype=np.float64)
    if len(path) < 2:
        return path.reshape(-1, 2), np.zeros(len(path))
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    keep = np.concatenate([[True], seg > 1e-6])
    path, s = path[keep], s[keep]
    if len(path) < 2:
        return path, np.zeros(1)
    s_new = np.arange(0.0, s[-1] + 1e-9, spacing_m)
    return np.stack([np.interp(s_new, s, path[:, 0]), np.interp(s_new, s, path[:, 1])], 1), s_new


def project_on_path(path_N2: np.ndarray, s_N: np.ndarray, xy: np.ndarray) -> tuple[float, float, int]:
    """Closest path point to `xy` -> (arc length s, signed lateral offset (+ = left of the path), index)."""
    d = np.linalg.norm(path_N2 - xy, axis=1)
    i = int(np.argmin(d))
    j = min(i + 1, len(path_N2) - 1)
    i0 = j - 1 if j > 0 else 0
    t = path_N2[j] - path_N2[i0]
    n = np.linalg.norm(t)
    if n < 1e-9:
        return float(s_N[i]), 0.0, i
    t = t / n
    rel = xy - path_N2[i]
    return float(s_N[i] + rel @ t), float(t[0] * rel[1] - t[1] * rel[0]), i


@dataclass
class PathTracker:
    """Steering (pure pursuit or LQR) plus PI speed control, with limits and a steering-rate limit.

    Pure pursuit: look-ahead L_d = clip(lookahead_gain * v + lookahead_min_m, lookahead_min_m, 25 m) along the
    path from the rear axle; steer = atan(2 L sin(alpha) / L_d). LQR: discrete lateral model on (lateral error,
    heading error) at the current speed with curvature input, gains from the Riccati iteration, plus the path
    curvature as feed-forward. Speed: accel = kp (v_ref - v) + ki * integral, clipped to the limits.
    """

    method: str = "pure_pursuit"
    dt_s: float = 0.1
    limits: ControlLimits = field(default_factory=ControlLimits)
    lookahead_gain: float = 0.6
    lookahead_min_m: float = 4.0
    kp: float = 1.0
    ki: float = 0.1
    _integral: float = 0.0
    _prev_steer: float = 0.0

    def reset(self) -> None:
        self._integral, self._prev_steer = 0.0, 0.0

    def command(self, path_ego_N2: np.ndarray, speed_mps: float, target_speed_mps: float) -> tuple[float, float]:
        """(steer_rad, accel_mps2) to follow a path given in the ego frame at a target speed."""
        path, s = resample_path(path_ego_N2, 0.5)
        if len(path) < 2:
            steer = 0.0
        elif self.method == "lqr":
            steer = self._lqr_steer(path, s, speed_mps)
        else:
            steer = self._pure_pursuit_steer(path, s, speed_mps)
        lim = self.limits
        max_delta = lim.max_steer_rate_rps * self.dt_s
        steer = float(np.clip(steer, self._prev_steer - max_delta, self._prev_steer + max_delta))
        steer = float(np.clip(steer, -lim.max_steer_rad, lim.max_steer_rad))
        self._prev_steer = steer
        return steer, self._speed_command(speed_mps, target_speed_mps)

    def _speed_command(self, speed_mps: float, target_speed_mps: float) -> float:
        err = target_speed_mps - speed_mps
        lim = self.limits
        raw = self.kp * err + self.ki * self._integral
        if -lim.max_decel_mps2 < raw < lim.max_accel_mps2:  # anti-windup: integrate only when not saturated
            self._integral += err * self.dt_s
        accel = float(np.clip(raw, -lim.max_decel_mps2, lim.max_accel_mps2))
        if target_speed_mps <= 0.05 and speed_mps < 0.3:
            accel, self._integral = -lim.max_decel_mps2 * 0.5, 0.0  # hold still when asked to stop
        return accel

    def _pure_pursuit_steer(self, path: np.ndarray, s: np.ndarray, speed_mps: float) -> float:
        s0, _, _ = project_on_path(path, s, np.zeros(2))
        ld = float(np.clip(self.lookahead_gain * speed_mps + self.lookahead_min_m, self.lookahead_min_m, 25.0))
        k = int(np.searchsorted(s, s0 + ld))
        target = path[min(k, len(path) - 1)]
        dist = float(np.hypot(*target))
        if dist < 1e-3:
            return 0.0
        alpha = np.arctan2(target[1], target[0])
        return float(np.arctan(2.0 * WHEELBASE_M * np.sin(alpha) / dist))

    def _lqr_steer(self, path: np.ndarray, s: np.ndarray, speed_mps: float) -> float:
        s0, lat, i = project_on_path(path, s, np.zeros(2))
        j = min(i + 1, len(path) - 1)
        i0 = j - 1 if j > 0 else 0
        heading = np.arctan2(*(path[j] - path[i0])[::-1])
        e_y, e_psi = lat, float(-heading)  # the ego (origin, heading 0) relative to the path
        kappa_ref = _curvature_at(path, s, s0 + max(2.0, 0.5 * speed_mps))
        v = max(speed_mps, 1.0)
        gain = _lqr_gain(v, self.dt_s)
        u = -(gain[0] * e_y + gain[1] * e_psi)
        return float(np.arctan(WHEELBASE_M * (kappa_ref + u)))


def _curvature_at(path: np.ndarray, s: np.ndarray, s_query: float, half_span_m: float = 2.0) -> float:
    """Signed curvature (1/m) from three path points around arc length s_query."""
    pts = [np.array([np.interp(q, s, path[:, 0]), np.interp(q, s, path[:, 1])])
           for q in (s_query - half_span_m, s_query, s_query + half_span_m)]
    a, b, c = pts
    cross = (b - a)[0] * (c - b)[1] - (b - a)[1] * (c - b)[0]
    denom = np.linalg.norm(b - a) * np.linalg.norm(c - b) * np.linalg.norm(c - a)
    return 0.0 if denom < 1e-9 else float(2.0 * cross / denom)


def _lqr_gain(speed_mps: float, dt_s: float, q_lat: float = 1.0, q_head: float = 1.0,
              r: float = 20.0) -> np.ndarray:
    """(2,) LQR gain for x = (lateral error, heading error), u = curvature correction (1/m)."""
    A = np.array([[1.0, speed_mps * dt_s], [0.0, 1.0]])
    B = np.array([[0.5 * speed_mps ** 2 * dt_s ** 2], [speed_mps * dt_s]])
    Q, R = np.diag([q_lat, q_head]), np.array([[r]])
    P = Q.copy()
    for _ in range(200):  # fixed-point Riccati iteration; converges in tens of steps for these sizes
        K = np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
        P = Q + A.T @ P @ (A - B @ K)
    return K.ravel()
