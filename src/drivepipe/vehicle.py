"""The ego vehicle (nuPlan's Chrysler Pacifica, devkit values) and its kinematic bicycle model, shared by the
synthetic world's expert driver and the closed-loop simulator."""

from __future__ import annotations

import numpy as np

from drivepipe.utils import detmath

WHEELBASE_M = 3.089
EGO_WIDTH_M = 2.297
EGO_FRONT_M = 4.049   # rear axle -> front bumper
EGO_REAR_M = 1.127    # rear axle -> rear bumper
EGO_HEIGHT_M = 1.777


def kinematic_bicycle(x: float, y: float, yaw: float, v: float, accel_mps2: float, steer_rad: float,
                      dt_s: float) -> tuple[float, float, float, float, float]:
    """One step of the rear-axle kinematic bicycle: speed first (clamped at 0, no reversing), then the pose on the
    mean speed and mid-step heading. Returns (x, y, yaw wrapped to [-pi, pi), new speed, yaw rate)."""
    v_new = max(0.0, v + accel_mps2 * dt_s)
    v_mean = 0.5 * (v + v_new)
    yaw_rate = v_mean * detmath.tan(steer_rad) / WHEELBASE_M
    yaw_mid = yaw + 0.5 * yaw_rate * dt_s
    new_yaw = (yaw + yaw_rate * dt_s + np.pi) % (2 * np.pi) - np.pi
    return (float(x + v_mean * detmath.cos(yaw_mid) * dt_s), float(y + v_mean * detmath.sin(yaw_mid) * dt_s), float(new_yaw),
            float(v_new), float(yaw_rate))
