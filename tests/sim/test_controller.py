"""The kinematic bicycle + trackers follow a curved route closely."""

from __future__ import annotations

import numpy as np
import pytest

from drivepipe.sim.controller import PathTracker, propagate_bicycle
from drivepipe.utils.geometry import global_to_ego_xy_yaw
from drivepipe.world_state import EgoKinematics

RADIUS_M = 30.0
MAX_LATERAL_ERROR_M = 0.5  # the bound this test asserts after the first second


def _arc_route() -> np.ndarray:
    straight = np.stack([np.linspace(-20, 0, 41), np.zeros(41)], 1)
    th = np.linspace(0, np.pi, 200)  # left turn of radius 30 m centred at (0, 30)
    arc = np.stack([RADIUS_M * np.sin(th), RADIUS_M - RADIUS_M * np.cos(th)], 1)
    return np.concatenate([straight, arc[1:]])


def _lateral_error(route: np.ndarray, x: float, y: float) -> float:
    return float(np.min(np.linalg.norm(route - [x, y], axis=1)))


@pytest.mark.parametrize("method", ["pure_pursuit", "lqr"])
def test_tracks_30m_arc(method: str) -> None:
    route = _arc_route()
    ego = EgoKinematics(x=-20.0, y=0.0, yaw=0.0, vx=6.0)
    tracker = PathTracker(method=method, dt_s=0.1)
    errors, speeds = [], []
    for k in range(120):
        local, _ = global_to_ego_xy_yaw(route, np.zeros(len(route)), ego.x, ego.y, ego.yaw)
        steer, accel = tracker.command(local, ego.vx, 8.0)
        ego = propagate_bicycle(ego, steer, accel, 0.1)
        if k >= 10:
            errors.append(_lateral_error(route, ego.x, ego.y))
        speeds.append(ego.vx)
    assert max(errors) < MAX_LATERAL_ERROR_M, (method, max(errors))
    assert abs(speeds[-1] - 8.0) < 0.3  # PI speed loop converged
    assert ego.y > 30.0  # actually went round the bend


def test_bicycle_straight_and_stops_at_zero() -> None:
    ego = EgoKinematics(x=0.0, y=0.0, yaw=0.0, vx=1.0)
    ego = propagate_bicycle(ego, 0.0, -5.0, 0.1)
    assert ego.vx == pytest.approx(0.5) and ego.y == 0.0 and ego.x == pytest.approx(0.075)
    for _ in range(5):
        ego = propagate_bicycle(ego, 0.0, -5.0, 0.1)
    assert ego.vx == 0.0  # no reversing
