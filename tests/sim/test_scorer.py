"""The closed-loop scorer on scripted step logs with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from drivepipe.sim.scorer import aggregate, comfort, savgol_derivative, score_episode

DT = 0.1


def _rows(n: int = 80, speed: float = 8.0, route_len: float = 1000.0, **overrides) -> list[dict]:
    """A straight drive along the route at constant speed; `overrides` maps step index -> dict of changes."""
    rows = []
    for k in range(n):
        x = speed * DT * (k + 1)
        rows.append({"t_s": DT * (k + 1), "x_m": x, "y_m": 0.0, "yaw_rad": 0.0, "speed_mps": speed,
                     "accel_mps2": 0.0, "yaw_rate_rps": 0.0, "steer_rad": 0.0, "collisions": "",
                     "off_road": False, "route_progress_m": x, "route_length_m": route_len,
                     "route_deviation_m": 0.0, "red_light": False, "expert_progress_m": x, "done_reason": ""})
    for k, change in overrides.get("at", {}).items():
        rows[k].update(change)
    return rows


def test_completed_route_scores_100() -> None:
    ep = score_episode(_rows(n=80, route_len=64.0), DT, 8.0)
    assert ep["route_completion"] == pytest.approx(100.0)
    assert ep["driving_score"] == pytest.approx(100.0) and ep["infraction_score"] == 1.0
    assert ep["interventions"] == 0 and ep["comfort"]["comfortable"] and ep["nuplan_cls"] == pytest.approx(1.0)


def test_vehicle_collision_once_despite_repeated_contact() -> None:
    hits = {k: {"collisions": "vehicle:7"} for k in range(30, 36)}  # 6 ticks touching the same car
    ep = score_episode(_rows(at=hits), DT, 8.0)
    assert ep["collisions"] == {"vehicle": 1, "pedestrian": 0, "static": 0}
    assert ep["infraction_score"] == pytest.approx(0.6)
    assert ep["route_completion"] == pytest.approx(64.0 / 10.0)
    assert ep["driving_score"] == pytest.approx(0.6 * ep["route_completion"])
    assert ep["nuplan_cls"] == 0.0


def test_pedestrian_collision_and_not_at_fault_when_stopped() -> None:
    ep = score_episode(_rows(at={10: {"collisions": [("pedestrian", 3)]}}), DT, 8.0)
    assert ep["infraction_score"] == pytest.approx(0.5)
    bike = score_episode(_rows(at={10: {"collisions": "bicycle:4"}}), DT, 8.0)
    assert bike["collisions"]["pedestrian"] == 1  # bicycles are VRUs
    stopped = score_episode(_rows(at={10: {"collisions": "vehicle:1", "speed_mps": 0.0}}), DT, 8.0)
    assert stopped["collisions"]["vehicle"] == 0  # only the min-speed factor of the stop remains
    assert stopped["infraction_score"] == pytest.approx(stopped["min_speed_factor"]) and stopped["min_speed_factor"] > 0.99


def test_contact_that_began_while_standing_is_no_infraction_once_the_ego_moves_on() -> None:
    # A replayed car runs into the standing ego at 1.1 s and still touches it when the ego pulls away at 1.3 s.
    hits = {k: {"collisions": "vehicle:5", "speed_mps": 0.0 if k < 12 else 1.0} for k in range(10, 16)}
    ep = score_episode(_rows(at=hits), DT, 8.0)
    assert ep["collisions"]["vehicle"] == 0 and ep["first_infraction"] != "collision_vehicle"
    moving = score_episode(_rows(at={k: {"collisions": "vehicle:5"} for k in range(10, 16)}), DT, 8.0)
    assert moving["first_infraction"] == "collision_vehicle" and moving["first_infraction_t_s"] == pytest.approx(1.1)


def test_two_actors_and_dedup_window() -> None:
    hits = {5: {"collisions": "vehicle:1"}, 70: {"collisions": "vehicle:1"}, 20: {"collisions": "static:9"}}
    ep = score_episode(_rows(at=hits), DT, 8.0)  # same car again after 6.5 s and 52 m: counts twice
    assert ep["collisions"] == {"vehicle": 2, "pedestrian": 0, "static": 1}
    assert ep["infraction_score"] == pytest.approx(0.6 ** 2 * 0.65)


def test_off_road_share() -> None:
    off = {k: {"off_road": True} for k in range(20, 40)}  # 20 ticks * 0.8 m = 16 m off-road on a 100 m route
    ep = score_episode(_rows(n=80, route_len=100.0, at=off), DT, 8.0)
    assert ep["off_road_share"] == pytest.approx(0.16)
    assert ep["infraction_score"] == pytest.approx(0.84)
    assert ep["drivable_area_compliance"] == 0.0


def test_blocked_ego_is_an_intervention() -> None:
    rows = _rows(n=80)
    for k, r in enumerate(rows):
        if k >= 20:
            r.update(speed_mps=0.0, x_m=rows[19]["x_m"], route_progress_m=rows[19]["x_m"])
    ep = score_episode(rows, DT, 8.0)  # blocked timeout = max(3 s, 0.5 * 8 s) = 4 s
    assert ep["terminated_by"] == "blocked" and ep["interventions"] == 1
    assert ep["route_completion"] == pytest.approx(16.0 / 10.0)


def test_route_deviation_terminates() -> None:
    ep = score_episode(_rows(at={30: {"route_deviation_m": 31.0}, 60: {"collisions": "vehicle:2"}}), DT, 8.0)
    assert ep["terminated_by"] == "route_deviation"
    assert ep["collisions"]["vehicle"] == 0  # after the terminating event nothing is scored


def test_jerk_spike_flagged_by_comfort() -> None:
    rows = _rows(n=80)
    speed = 8.0
    for k, r in enumerate(rows):
        acc = -4.0 if 20 <= k < 30 else (2.4 if 30 <= k < 40 else 0.0)  # 1 s hard brake, then 1 s full throttle
        speed += acc * DT
        r["speed_mps"] = speed
    c = comfort(rows, DT)
    assert not c["comfortable"]
    assert c["max_abs_lon_jerk"] > 4.13  # the 6.4 m/s^2 swing within ~1 s; accelerations stay within bounds
    assert -4.05 <= c["min_lon_accel"] and c["max_lon_accel"] <= 2.40 + 1e-6
    assert comfort(_rows(n=80), DT)["comfortable"]


def test_savgol_exact_on_quadratics() -> None:
    t = np.arange(40) * DT
    x = 1.5 * t ** 2 - 2 * t + 3
    assert np.allclose(savgol_derivative(x, DT, 9), 3 * t - 2)
    assert np.allclose(savgol_derivative(x, DT, 15, deriv=2), 3.0)


def test_aggregate_means_and_sums() -> None:
    a = score_episode(_rows(route_len=64.0), DT, 8.0)
    b = score_episode(_rows(at={5: {"collisions": "vehicle:1"}}), DT, 8.0)
    agg = aggregate([a, b])
    assert agg["route_completion"] == pytest.approx((100.0 + 6.4) / 2)
    assert agg["driving_score"] == pytest.approx((100.0 + 6.4 * 0.6) / 2)
    assert agg["collisions"]["vehicle"] == 1 and agg["collision_rate"] == 0.5
    assert agg["comfort"]["comfortable_rate"] == 1.0
