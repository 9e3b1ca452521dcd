"""Issue 14: scores that standing still cannot game, route and traffic-light inputs that stop the planner,
typed balanced scenarios with lane-level routes, and parallel == sequential."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from drivepipe.config import from_dict
from drivepipe.schema import LIGHT_CODES
from drivepipe.sim.planner import Perception, plan_route
from drivepipe.sim.scenarios import Candidate, balanced_pick
from drivepipe.sim.scorer import score_episode
from drivepipe.vehicle import EGO_FRONT_M

RED, GREEN = LIGHT_CODES.index("red"), LIGHT_CODES.index("green")


def _cfg(**carla_eval):
    spec = importlib.util.spec_from_file_location("_root_conftest", Path(__file__).parents[1] / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = from_dict(module.tiny_params())
    return replace(cfg, carla_eval=replace(cfg.carla_eval, animation=False, **carla_eval))


def _rows(route_len: float, speed: float, n: int = 50) -> list[dict]:
    return [{"t_s": 0.1 * (i + 1), "x_m": speed * 0.1 * (i + 1), "y_m": 0.0, "yaw_rad": 0.0, "speed_mps": speed,
             "accel_mps2": 0.0, "yaw_rate_rps": 0.0, "steer_rad": 0.0, "collisions": "", "off_road": False,
             "route_progress_m": speed * 0.1 * (i + 1), "route_length_m": route_len, "route_deviation_m": 0.0,
             "red_light": False, "expert_progress_m": 0.0, "done_reason": ""} for i in range(n)]


def test_zero_length_route_is_not_full_completion() -> None:
    ep = score_episode(_rows(0.0, 0.0), 0.1, 5.0)
    assert ep["route_completion"] == 0.0 and ep["driving_score"] == 0.0 and not ep["valid_route"]


def _drive_to_light(status: int, steps: int = 120) -> tuple[float, float]:
    """Planner + a point-mass ego on a straight 80 m route with a light at 25 m -> (final x, final speed)."""
    x, v = 0.0, 8.0
    for _ in range(steps):
        ahead = np.concatenate([[x], np.arange(np.floor(x) + 1.0, 80.0)]) - x   # the route from the ego on
        route = np.stack([ahead, np.zeros(len(ahead))], 1)
        lights = np.array([[25.0 - x, 0.0, status]])
        p = plan_route(route, v, 8.0, Perception(route_lights=lights))
        v = max(0.0, v + np.clip((p.target_speed_mps - v) / 1.0, -4.0, 2.0) * 0.1)
        x += v * 0.1
    return x, v


def test_red_light_on_the_route_stops_the_planner_green_does_not() -> None:
    x_red, v_red = _drive_to_light(RED)
    assert v_red < 0.1 and x_red + EGO_FRONT_M < 25.0  # stopped, bumper before the connector entry
    x_green, _ = _drive_to_light(GREEN)
    assert x_green > 40.0


def test_a_red_light_behind_the_front_bumper_does_not_stop_an_ego_in_the_junction() -> None:
    """The light turns red when the ego's front is 3.6 m past the stop point (it stopped there forever before and
    was scored agent-blocked); 0.5 m past it, a light still holds the ego (a stop that overshot the line)."""
    route = np.stack([np.arange(0.0, 60.0), np.zeros(60)], 1)
    for past, stops in ((3.6, False), (0.5, True)):
        lights = np.array([[EGO_FRONT_M - past, 0.0, RED]])
        p = plan_route(route, 1.0, 8.0, Perception(route_lights=lights))
        assert (p.lead_source == "red_light") == stops and (p.target_speed_mps < 1.0) == stops, (past, p)


def test_balanced_pick_covers_types_and_locations() -> None:
    cands = [Candidate(f"log{k}", f"loc{k % 2}", 40 * i, typ, 1.0)
             for k in range(4) for i in range(3) for typ in ("cruising", "traffic_light", "lead_braking")]
    picked = balanced_pick(cands, 6, lambda c: c.index * 0.05)
    assert sorted(c.scenario_type for c in picked) == sorted(["cruising", "traffic_light", "lead_braking"] * 2)
    for typ in ("cruising", "traffic_light", "lead_braking"):
        assert {c.location for c in picked if c.scenario_type == typ} == {"loc0", "loc1"}


def test_balanced_pick_spreads_over_all_locations_not_the_first_in_name_order() -> None:
    """Four types that every location offers, four picks: each of the three locations gets one at least (the old
    per-type rotation started every type at the first location name, so one location took every first-round slot)."""
    types = ("cruising", "traffic_light", "lead_braking", "unprotected_turn")
    cands = [Candidate(f"log{k}", f"loc{k}", 40 * i, typ, 1.0) for k in range(3) for i in range(3) for typ in types]
    picked = balanced_pick(cands, 4, lambda c: c.index * 0.05)
    assert sorted(c.scenario_type for c in picked) == sorted(types)
    assert {c.location for c in picked} == {"loc0", "loc1", "loc2"}


def test_balanced_pick_gives_a_logged_lane_change_its_slot_before_common_types() -> None:
    """Log A holds the only logged lane change, 0.5 s after a lead-braking event that both logs hold: visiting the
    scarce type first keeps the logged lane change instead of falling back to a lane-change mission."""
    cands = [Candidate("A", "loc0", 500, "lead_braking", 1.0), Candidate("B", "loc1", 500, "lead_braking", 1.0),
             Candidate("A", "loc0", 510, "lane_change", 2.0),
             Candidate("B", "loc1", 300, "lane_change", 0.5, "change_lane")]
    picked = balanced_pick(cands, 2, lambda c: c.index * 0.05)
    lane = [c for c in picked if c.scenario_type == "lane_change"]
    assert [(c.log_name, c.mission) for c in lane] == [("A", "log")]
    assert [c.log_name for c in picked if c.scenario_type == "lead_braking"] == ["B"]


def _scenarios(cfg, root: Path, num: int):
    from drivepipe.sim.embedded import EmbeddedBackend
    from drivepipe.sim.harness import scenario_seed

    backend = EmbeddedBackend(cfg, root)
    try:
        return backend.select_scenarios(num, lambda k: scenario_seed(0, k)), backend.selection
    finally:
        backend.close()


def test_scenarios_have_lane_routes_to_a_goal_past_the_expert(synthetic_root: Path) -> None:
    cfg = _cfg(duration_s=3.0)
    scs, selection = _scenarios(cfg, synthetic_root, 4)
    assert len(scs) == 4 and selection["scenario_source"].startswith("all_logs")
    assert len({sc.extra["scenario_type"] for sc in scs}) >= 2
    for sc in scs:
        length = float(np.linalg.norm(np.diff(sc.route_xy, axis=0), axis=1).sum())
        assert sc.extra["route_source"] == "lane_graph"
        assert length == pytest.approx(sc.extra["expert_driven_m"] + cfg.carla_eval.goal_beyond_m, abs=1.0)
        expert_end = sc.extra["expert"][np.searchsorted(sc.extra["expert"][:, 4], sc.duration_s), :2]
        assert np.linalg.norm(sc.route_xy[-1] - expert_end) > 0.5 * cfg.carla_eval.goal_beyond_m
        steps = np.diff(sc.route_xy, axis=0)
        steps = steps[np.linalg.norm(steps, axis=1) > 1e-6]
        assert np.all(np.einsum("nd,nd->n", steps[1:], steps[:-1]) > 0.0), "the route turns back on itself"


def test_a_lane_joined_mid_way_continues_from_the_join() -> None:
    from drivepipe.sim.routes import _from_join

    lane = np.column_stack([np.arange(20.0, -21.0, -1.0), np.zeros(41)])  # westbound lane from x=20 to x=-20
    tail_end = np.array([-3.6, 0.0])                                      # a connector ended inside it
    part = _from_join(lane, tail_end)
    assert part[0, 0] < tail_end[0] and part[0, 0] > tail_end[0] - 1.0 and part[-1, 0] == -20.0
    assert np.all(np.diff(part[:, 0]) < 0)                                 # only westwards: never back to x=20
    np.testing.assert_array_equal(_from_join(lane, np.array([20.0, 0.3])), lane)  # joined at its start: whole lane


def _lane_with_neighbour(finder, min_len: float = 60.0):
    for k in sorted(finder.path_of_lane.values()):
        c = finder.coords[k]
        if np.linalg.norm(np.diff(c, axis=0), axis=1).sum() < min_len:
            continue
        heading = (c[-1] - c[0]) / np.linalg.norm(c[-1] - c[0])
        xy = c[0] + np.arange(2.0, 13.0)[:, None] * heading     # an expert driving 10 m down the lane's centre
        yaw = np.full(len(xy), np.arctan2(heading[1], heading[0]))
        if finder.pair(xy[-1], float(yaw[-1])) is not None:
            return k, xy, yaw
    raise AssertionError("no lane with a neighbour")


def test_lane_change_mission_routes_into_the_neighbour_lane() -> None:
    import shapely

    from drivepipe.sim.routes import LANE_CHANGE_M, LaneChangeFinder, lane_change_route
    from drivepipe.world.roads import build_city

    vmap = build_city("us-ma-boston", 1234).vector_map          # two lanes per direction
    finder = LaneChangeFinder(vmap)
    own, xy, yaw = _lane_with_neighbour(finder)
    other = finder.pair(xy[-1], float(yaw[-1]))[1]
    route, lights, source = lane_change_route(vmap, xy, yaw, len(xy) - 1, 80.0)
    assert source == "lane_graph_lane_change"
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(route, axis=0), axis=1))])
    assert s[-1] == pytest.approx(80.0, abs=0.5)
    lane_a, lane_b = (shapely.LineString(finder.coords[k]) for k in (own, other))
    at = (lambda q: np.array([np.interp(q, s, route[:, 0]), np.interp(q, s, route[:, 1])]))
    dist = (lambda line, q: line.distance(shapely.Point(*at(q))))
    s0 = 10.0                                                     # the manoeuvre starts where the expert is
    gap = lane_a.distance(shapely.Point(*finder.coords[other][0]))
    assert gap == pytest.approx(3.5, abs=0.1)                     # a neighbour one lane width away
    assert dist(lane_a, s0 - 1.0) < 0.05                          # still on its own lane
    assert dist(lane_b, s0 + LANE_CHANGE_M + 2.0) < 0.05          # then on the neighbour
    assert dist(lane_a, s0 + LANE_CHANGE_M / 2) == pytest.approx(gap / 2, abs=0.2)  # half way at mid-manoeuvre
    lateral = [dist(lane_a, q) for q in np.arange(s0, s0 + LANE_CHANGE_M, 1.0)]
    assert np.all(np.diff(lateral) >= -1e-6)                      # moves over monotonically, never back
    steps = np.diff(route, axis=0)
    assert np.all(np.einsum("nd,nd->n", steps[1:], steps[:-1]) > 0.0)
    assert lights and all(fid is not None for fid, _ in lights)   # the connectors after the neighbour lane
    at_start, _, _ = lane_change_route(vmap, xy, yaw, 0, 80.0)      # manoeuvre from the very first pose
    assert np.linalg.norm(at_start[0] - xy[0]) < 0.05 and len(at_start) > 20


def test_truncate_cuts_at_arc_length_and_keeps_the_start() -> None:
    from drivepipe.sim.routes import truncate

    xy = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    np.testing.assert_allclose(truncate(xy, 2.0), [[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    np.testing.assert_array_equal(truncate(xy, 0.0), xy[:1])     # was extrapolated from the last segment
    np.testing.assert_array_equal(truncate(xy, 9.0), xy)


def test_single_lane_roads_offer_no_lane_change_mission() -> None:
    from drivepipe.sim.routes import LaneChangeFinder
    from drivepipe.world.roads import build_city

    finder = LaneChangeFinder(build_city("sg-one-north", 1234).vector_map)  # one lane per direction
    assert len(finder.path_of_lane) >= 8
    for k in finder.path_of_lane.values():
        c = finder.coords[k]
        mid = c[len(c) // 2]
        d = c[min(len(c) // 2 + 1, len(c) - 1)] - c[max(len(c) // 2 - 1, 0)]
        assert finder.pair(mid, float(np.arctan2(d[1], d[0]))) is None


def _job(kind: str, sc, cfg, root: Path, out: Path):
    from drivepipe.sim.suite import Job

    return Job(kind, "replay", sc, cfg, "", str(root), None, str(out))


def test_stationary_scores_low_on_a_100m_route(synthetic_root: Path, tmp_path: Path) -> None:
    from drivepipe.sim.suite import ordered_map, run_job

    cfg = _cfg(duration_s=3.0, goal_beyond_m=100.0)
    scs, _ = _scenarios(cfg, synthetic_root, 1)
    rows = ordered_map(run_job, [_job(k, scs[0], cfg, synthetic_root, tmp_path) for k in ("stationary", "expert")], 1)
    (still, _), (expert, _) = rows
    assert still["route_length_m"] >= 100.0
    assert still["route_completion"] < 10.0 and still["driving_score"] < 10.0 and still["nuplan_cls"] == 0.0
    assert expert["route_completion"] > still["route_completion"] + 5.0 and expert["nuplan_cls"] > 0.5


def test_route_lights_reach_the_bundle_from_the_log(synthetic_root: Path) -> None:
    from drivepipe.sim.embedded import EmbeddedBackend

    cfg = _cfg(duration_s=2.0)
    scs, _ = _scenarios(cfg, synthetic_root, 6)
    sc = next(s for s in scs if s.extra["route_lights"])
    backend = EmbeddedBackend(cfg, synthetic_root)
    backend.render_sensors = False
    bundle = backend.reset(sc)
    status = backend._lights.get(bundle.meta.token, {})
    want = {LIGHT_CODES.index(status.get(fid, "unknown")) for fid, _ in sc.extra["route_lights"]}
    backend.close()
    assert len(bundle.annotations.route_lights) >= 1
    assert set(bundle.annotations.route_lights[:, 2].astype(int)) <= want
    assert np.allclose(bundle.annotations.route[0], [0.0, 0.0], atol=3.0)  # route in the ego frame, from the ego


@pytest.mark.slow
def test_parallel_equals_sequential(synthetic_root: Path, tmp_path: Path) -> None:
    from drivepipe.sim.suite import ordered_map, run_job

    cfg = _cfg(duration_s=1.5)
    scs, _ = _scenarios(cfg, synthetic_root, 2)
    kinds = ("constant_velocity", "privileged")

    def run(workers: int, out: Path) -> list:
        return ordered_map(run_job, [_job(k, sc, cfg, synthetic_root, out) for k in kinds for sc in scs], workers)

    seq, par = run(1, tmp_path / "seq"), run(2, tmp_path / "par")
    strip = (lambda rs: [{k: v for k, v in r.items() if k != "wall_s"} for r, _ in rs])
    assert strip(seq) == strip(par) and [e for _, e in seq] == [e for _, e in par]
    for f in sorted((tmp_path / "seq" / "details" / "steps").glob("*.csv")):
        assert f.read_bytes() == (tmp_path / "par" / "details" / "steps" / f.name).read_bytes()


@pytest.mark.parametrize("status", [RED, GREEN])
def test_agent_hands_route_and_light_to_the_planner(status: int) -> None:
    from drivepipe.schema import BundleMeta
    from drivepipe.sim.baselines import PrivilegedAgent
    from drivepipe.sim.interfaces import ClosedLoopScenario, EgoHistory, assemble_bundle
    from drivepipe.world_state import EgoKinematics

    cfg = _cfg()
    ego = EgoKinematics(x=100.0, y=50.0, yaw=np.pi / 2, vx=6.0)
    route = np.stack([np.full(60, 100.0), 50.0 + np.arange(60.0)], 1)  # straight north, global frame
    sc = ClosedLoopScenario("l/t", "l", "t", 0, "loc", route, ego, 5.0, 0)
    agent = PrivilegedAgent(cfg)
    agent.reset(sc)
    hist = EgoHistory()
    hist.push(0.0, ego.x, ego.y, ego.yaw)
    route_ego = np.stack([np.arange(60.0), np.zeros(60)], 1)
    bundle = assemble_bundle(BundleMeta("l", "t", 0, "loc"), ego, {}, np.zeros((0, 6), np.float32),
                             hist.sample(0.5, 2), route_ego, np.array([[10.0, 0.0, status]]))
    action = agent.act(bundle)
    assert action.info["lead_source"] == ("red_light" if status == RED else "")
    assert (action.accel_mps2 < -1.0) if status == RED else (action.accel_mps2 >= 0.0)
    assert np.allclose(action.waypoints[:5, 1], 0.0, atol=0.2)  # it follows the route it was handed


def test_time_to_collision_projects_constant_velocity() -> None:
    from drivepipe.sim.stepmetrics import time_to_collision
    from drivepipe.world_state import EgoKinematics

    ego = EgoKinematics(x=0.0, y=0.0, yaw=0.3, vx=10.0)
    d = np.array([np.cos(0.3), np.sin(0.3)])
    car = (lambda at, v=0.0: np.array([[*(at * d), 0.3, 4.5, 2.0, *(v * d)]]))
    gap = 12.0 - EGO_FRONT_M - 2.25  # bumper to bumper, m
    assert time_to_collision(ego, car(12.0)) == pytest.approx(np.ceil(gap / 10.0 / 0.1) * 0.1)
    assert time_to_collision(ego, car(12.0, v=10.0)) == np.inf  # same speed ahead: never closer
    assert time_to_collision(ego, car(-12.0)) == np.inf and time_to_collision(ego, car(30.0)) == np.inf


def test_cls_terms_ttc_speed_limit_and_progress_rule() -> None:
    base = _rows(100.0, 5.0)
    for r in base:
        r["expert_progress_m"] = r["route_progress_m"]
    clean = score_episode(base, 0.1, 5.0)
    assert clean["nuplan_cls"] == pytest.approx(1.0, abs=1e-6)
    risky = [dict(r, ttc_s=0.5) if i == 10 else r for i, r in enumerate(base)]
    assert score_episode(risky, 0.1, 5.0)["nuplan_cls"] == pytest.approx(11.0 / 16.0, abs=1e-6)
    fast = [dict(r, speed_limit_mps=3.0) for r in base]  # 2 m/s over the limit the whole time
    sl = score_episode(fast, 0.1, 5.0)["speed_limit_compliance"]
    assert sl == pytest.approx(max(0.0, 1.0 - 2.0 / 2.23))
    still = [dict(r, route_progress_m=0.0, expert_progress_m=1.5) for r in base]  # expert moved < 2 m
    assert score_episode(still, 0.1, 5.0)["progress_ratio"] == 1.0


def test_red_light_counts_through_the_stop_line_not_across(synthetic_root: Path) -> None:
    from dataclasses import replace as dc_replace

    from drivepipe.sim.embedded import EmbeddedBackend
    from drivepipe.vehicle import EGO_FRONT_M as FRONT

    cfg = _cfg(duration_s=2.0)
    scs, _ = _scenarios(cfg, synthetic_root, 6)
    backend = EmbeddedBackend(cfg, synthetic_root)
    backend.render_sensors = False
    backend.reset(scs[0])
    token = str(backend._log.lidar_pcs.token[backend._sweep(0.0)])
    reds = [f for f, st in backend._lights.get(token, {}).items() if st == "red" and f in backend._conn_lines]
    if not reds:
        backend.close()
        pytest.skip("no red light at the scenario start in this tiny world")
    line = backend._conn_lines[reds[0]]
    (x0, y0), (x1, y1) = line.coords[0][:2], line.interpolate(1.0).coords[0][:2]
    yaw = float(np.arctan2(y1 - y0, x1 - x0))
    put = (lambda d, h: dc_replace(backend._ego, x=x0 + d * np.cos(yaw) - FRONT * np.cos(h),
                                   y=y0 + d * np.sin(yaw) - FRONT * np.sin(h), yaw=h))
    backend._ego, backend._inside_red = put(-0.5, yaw), set()
    assert backend._red_light() is False  # still before the stop line
    backend._ego = put(0.8, yaw)
    assert backend._red_light() is True   # through the stop line on red
    backend._ego, backend._inside_red = put(0.8, yaw + np.pi / 2), set()
    assert backend._red_light() is False  # crossing the connector sideways is not running its light
    backend.close()
