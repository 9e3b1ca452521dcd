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
