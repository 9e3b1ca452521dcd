"""Helpers written once and shared across stages: the IDM (world traffic and closed-loop planner), 3-D box corners
and the pinhole projection (sample pictures and evaluation pictures)."""

from __future__ import annotations

import numpy as np

from drivepipe.idm import IdmParams, idm_accel
from drivepipe.sim.planner import PLANNER_IDM
from drivepipe.utils.projection import box_corners_3d, project_to_image
from drivepipe.world.traffic import MAX_BRAKE, TRAFFIC_IDM


def test_idm_clips_only_where_the_params_say() -> None:
    # closing fast on a stopped car 0.5 m ahead: the plain model asks for far more than the traffic's brake limit
    plain = float(idm_accel(15.0, 15.0, 0.5, 0.0, PLANNER_IDM))
    assert plain < -100.0
    assert float(idm_accel(15.0, 15.0, 0.5, 0.0, TRAFFIC_IDM)) == -MAX_BRAKE
    # far above the desired speed on a free road: the free-road term is floored at -3 for traffic only
    p = IdmParams(accel_mps2=1.0, decel_mps2=2.0, min_gap_m=2.0, headway_s=1.0)
    assert float(idm_accel(20.0, 10.0, np.inf, 0.0, p)) == 1.0 * (1 - 2.0 ** 4)
    floored = IdmParams(accel_mps2=1.0, decel_mps2=2.0, min_gap_m=2.0, headway_s=1.0, free_floor=-3.0)
    assert float(idm_accel(20.0, 10.0, np.inf, 0.0, floored)) == -3.0
    # the hand formula at one point, and vectorised == scalar
    v, v0, gap, vl, a, b, s0, T = 8.0, 10.0, 20.0, 5.0, 1.5, 3.0, 2.0, 1.5
    s_star = s0 + v * T + v * (v - vl) / (2 * np.sqrt(a * b))
    assert np.isclose(float(idm_accel(v, v0, gap, vl, PLANNER_IDM)), a * (1 - (v / v0) ** 4 - (s_star / gap) ** 2))
    vec = idm_accel(np.array([v, 3.0]), np.array([v0, v0]), np.array([gap, np.inf]), np.array([vl, 0.0]), PLANNER_IDM)
    assert vec[0] == float(idm_accel(v, v0, gap, vl, PLANNER_IDM)) and vec[1] == a * (1 - (3.0 / v0) ** 4)


def test_box_corner_projects_to_its_pixel() -> None:
    # a camera 1.5 m up looking along ego +x (OpenCV: x right = -y ego, y down = -z ego, z forward = +x ego)
    cam_to_ego = np.eye(4)
    cam_to_ego[:3, :3] = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    cam_to_ego[:3, 3] = [0.0, 0.0, 1.5]
    K = np.array([[100.0, 0.0, 64.0], [0.0, 100.0, 36.0], [0.0, 0.0, 1.0]])
    box = np.array([[10.0, 1.0, 1.0, 4.0, 2.0, 2.0, 0.0, 0.0, 0.0]])  # centre 10 m ahead, 1 m left, 2 m tall
    corners = box_corners_3d(box)[0]
    assert np.allclose(corners[0], [12.0, 2.0, 0.0]) and np.allclose(corners[4], [12.0, 2.0, 2.0])
    uv, depth = project_to_image(corners, K, cam_to_ego)
    # front-left bottom corner: 12 m deep, 2 m left, 1.5 m below the camera
    assert np.isclose(depth[0], 12.0)
    assert np.allclose(uv[0], [64.0 - 100.0 * 2.0 / 12.0, 36.0 + 100.0 * 1.5 / 12.0])
    _, behind = project_to_image(np.array([[-5.0, 0.0, 1.0]]), K, cam_to_ego)
    assert behind[0] < 0
