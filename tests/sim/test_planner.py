"""The planner reacts to detections and to predicted corridor entries; imitation plans are collision-checked."""

from __future__ import annotations

import numpy as np

from drivepipe.idm import idm_accel
from drivepipe.sim.planner import PLANNER_IDM, Perception, plan

ROUTE = np.stack([np.linspace(0, 80, 81), np.zeros(81)], 1)


def _box(x: float, y: float, vx: float = 0.0) -> np.ndarray:
    return np.array([[x, y, 0.8, 4.5, 2.0, 1.6, 0.0, vx, 0.0]])


def test_free_road_accelerates_to_target() -> None:
    p = plan(ROUTE, 5.0, 8.0, Perception())
    assert p.target_speed_mps > 5.0 and p.lead_source == "" and p.source == "route"


def test_detected_leader_in_lane_slows_but_not_in_other_lane() -> None:
    near = plan(ROUTE, 8.0, 8.0, Perception(boxes=_box(12.0, 0.3), labels=np.array([0])))
    assert near.lead_source == "detection" and near.target_speed_mps < 8.0 - 1.0
    other = plan(ROUTE, 8.0, 8.0, Perception(boxes=_box(12.0, 3.8), labels=np.array([0])))
    assert other.lead_source == "" and other.target_speed_mps == 8.0


def test_kerb_parked_car_is_passed_but_one_reaching_further_into_the_lane_stops_the_ego() -> None:
    from drivepipe.vehicle import EGO_WIDTH_M
    from drivepipe.world.population import PARKED_INTRUSION_M
    from drivepipe.world.roads import LANE_WIDTH_M

    width = 1.82  # a parked car the way the world parks it: its body PARKED_INTRUSION_M over the lane's edge
    lat = LANE_WIDTH_M / 2 + width / 2 - PARKED_INTRUSION_M
    assert lat - width / 2 - EGO_WIDTH_M / 2 > 0.3  # the ego on the lane centre clears it by > 0.3 m
    parked = np.array([[15.0, lat, 0.8, 4.5, width, 1.6, 0.0, 0.0, 0.0]])
    assert plan(ROUTE, 6.0, 8.0, Perception(boxes=parked, labels=np.array([0]))).lead_source == ""
    parked[0, 1] = lat - 0.4  # double-parked, 0.65 m into the lane: the ego would touch it
    assert plan(ROUTE, 6.0, 8.0, Perception(boxes=parked, labels=np.array([0]))).lead_source == "detection"


def test_predicted_crossing_agent_is_an_obstacle() -> None:
    # A pedestrian 6 m to the left, predicted to walk into the lane 15 m ahead.
    traj = np.stack([np.full(6, 15.0), np.linspace(5.0, 0.0, 6)], 1)[None, None]  # (1, 1, 6, 2)
    per = Perception(pred_xy=traj, pred_prob=np.ones((1, 1)), pred_width=np.array([0.7]))
    p = plan(ROUTE, 8.0, 8.0, per)
    assert p.lead_source == "prediction" and p.target_speed_mps < 7.0
    unlikely = Perception(pred_xy=traj, pred_prob=np.full((1, 1), 0.05), pred_width=np.array([0.7]))
    assert plan(ROUTE, 8.0, 8.0, unlikely).lead_source == ""


def test_imitation_plan_used_unless_it_collides() -> None:
    plan_xy = np.stack([np.arange(1, 7) * 4.0, np.zeros(6)], 1)
    ok = plan(ROUTE, 8.0, 8.0, Perception(plan_xy=plan_xy), mode="imitation")
    assert ok.source == "imitation" and abs(ok.target_speed_mps - 8.0) < 1e-6
    blocked = Perception(boxes=_box(14.0, 0.0), labels=np.array([0]), plan_xy=plan_xy)
    assert plan(ROUTE, 8.0, 8.0, blocked, mode="imitation").source == "route"


def test_idm_stops_before_standing_obstacle() -> None:
    assert idm_accel(8.0, 8.0, 3.0, 0.0, PLANNER_IDM) < -3.0
    assert abs(idm_accel(8.0, 8.0, np.inf, 0.0, PLANNER_IDM)) < 1e-9


def test_gaps_are_measured_from_the_ego_not_from_where_the_route_polyline_starts() -> None:
    from drivepipe.vehicle import EGO_FRONT_M

    behind = np.stack([np.linspace(-2.6, 77.4, 81), np.zeros(81)], 1)  # the route's first point 2.6 m behind
    p = plan(behind, 1.0, 8.0, Perception(boxes=_box(8.0, 0.0), labels=np.array([0])))
    assert p.lead_source == "detection" and abs(p.lead_gap_m - (8.0 - EGO_FRONT_M - 4.5 / 2)) < 0.05


def test_prediction_of_a_follower_driving_through_the_ego_is_not_an_obstacle() -> None:
    # Constant-velocity future of a car 8 m behind at 6 m/s: it crosses the ego's corridor ahead of the bumper.
    traj = np.stack([-8.0 + 6.0 * 0.5 * np.arange(1, 7), np.zeros(6)], 1)[None, None]
    follower = Perception(pred_xy=traj, pred_prob=np.ones((1, 1)), pred_width=np.array([1.8]),
                          pred_origin=np.array([[-8.0, 0.0]]))
    assert plan(ROUTE, 1.0, 8.0, follower).lead_source == ""
    slow = np.stack([7.0 + 0.5 * 0.5 * np.arange(1, 7), np.zeros(6)], 1)[None, None]
    ahead = Perception(pred_xy=slow, pred_prob=np.ones((1, 1)), pred_width=np.array([1.8]),
                       pred_origin=np.array([[7.0, 0.0]]))  # a slow agent 7 m ahead on the route: an obstacle
    assert plan(ROUTE, 1.0, 8.0, ahead).lead_source == "prediction"


def test_a_crossing_the_ego_cannot_reach_in_time_is_not_an_obstacle() -> None:
    from drivepipe.sim.planner import ego_reach_m

    assert np.allclose(ego_reach_m(2.0, 8.0, np.array([1.0, 4.0, 6.0])), [2.75, 20.0, 36.0])  # 4 s to 8 m/s
    # A pedestrian crossing 40 m ahead within the first second, the ego at 2 m/s: gone before the ego gets there.
    traj = np.stack([np.full(6, 40.0), np.linspace(1.0, -4.0, 6)], 1)[None, None]
    per = Perception(pred_xy=traj, pred_prob=np.ones((1, 1)), pred_width=np.array([0.7]),
                     pred_origin=np.array([[40.0, 2.0]]))
    assert plan(ROUTE, 2.0, 8.0, per).lead_source == ""
    near = Perception(pred_xy=traj - [[28.0, 0.0]], pred_prob=np.ones((1, 1)), pred_width=np.array([0.7]),
                      pred_origin=np.array([[12.0, 2.0]]))  # the same crossing 12 m ahead: the ego could be there
    assert plan(ROUTE, 2.0, 8.0, near).lead_source == "prediction"


def test_a_detected_car_overtaking_through_the_ego_is_no_leader_but_a_standing_one_is() -> None:
    overtaking = np.array([[2.0, 0.0, 0.8, 4.5, 1.8, 1.6, 0.0, 6.0, 0.0]])  # centre behind the front bumper
    assert plan(ROUTE, 0.0, 8.0, Perception(boxes=overtaking, labels=np.array([0]))).lead_source == ""
    standing = overtaking.copy()
    standing[0, 7] = 0.0
    p = plan(ROUTE, 0.0, 8.0, Perception(boxes=standing, labels=np.array([0])))
    assert p.lead_source == "detection" and p.target_speed_mps == 0.0
