"""Right of way, actuated signals, the expert's lane-change gap check and work zones of the synthetic world."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from drivepipe.config import SyntheticConfig
from drivepipe.utils.geometry import box_corners_2d
from drivepipe.vehicle import EGO_WIDTH_M
from drivepipe.world.ego import EGO_CENTER_OFFSET_M, EGO_LENGTH_M, lane_change_safe
from drivepipe.world.population import ZONE_CONE_GAP_M, ZONE_SIGN_AHEAD_M
from drivepipe.world.roads import build_city
from drivepipe.world.signals import (
    ALL_RED_S,
    CLEAR_START_S,
    GREEN,
    GREEN_S,
    RED,
    YELLOW,
    YELLOW_S,
    TrafficLights,
    movement_ranks,
    must_stop,
)
from drivepipe.world.world import World


def test_lane_change_needs_a_safe_gap_to_both_neighbours():
    assert lane_change_safe(8.0, 10.0, None, None)
    assert not lane_change_safe(8.0, 10.0, (1.0, 8.0), None)            # bodies almost touching ahead
    assert not lane_change_safe(8.0, 10.0, None, (-2.0, 8.0, 10.0))     # alongside
    assert not lane_change_safe(8.0, 10.0, None, (10.0, 12.0, 12.0))    # a fast follower 10 m back
    assert lane_change_safe(8.0, 10.0, None, (25.0, 8.0, 10.0))         # same speed, 25 m back
    assert not lane_change_safe(10.0, 10.0, (8.0, 2.0), None)           # closing fast on a slow new leader
    assert lane_change_safe(0.0, 10.0, (3.0, 0.0), (3.0, 0.0, 10.0))    # a gap in a standing queue


def test_permissive_turn_clears_at_the_end_of_the_phase():
    # standing at its line (it yielded through the green): goes on yellow and early all-red unless a conflict is left
    assert not must_stop(YELLOW, 0.5, 0.0, False, clear_s=0.5)
    assert must_stop(YELLOW, 0.5, 0.0, True, clear_s=0.5)
    assert not must_stop(RED, 0.5, 0.0, False, clear_s=YELLOW_S + 0.2)
    # the last oncoming car that could not stop at the yellow leaves the conflict zone ~2.5 s into the all-red
    # (4 s after the yellow at 5 m/s): the turner still starts then, so one turner per phase clears a queue
    assert not must_stop(RED, 0.5, 0.0, False, clear_s=YELLOW_S + 2.5)
    assert must_stop(RED, 0.5, 0.0, False, clear_s=YELLOW_S + CLEAR_START_S + 0.5)  # too late to start
    assert not must_stop(RED, 0.3, 1.5, False, clear_s=YELLOW_S + 1.0)  # rolling: clears through the all-red
    assert must_stop(RED, 0.5, 0.0, False, clear_s=np.inf)              # straight traffic / after the all-red
    assert must_stop(YELLOW, 20.0, 5.0, False, clear_s=0.5)             # far from the line: stops as usual


def test_turns_rank_below_straight_and_kerb_side_turns_below_none():
    for location, near in (("us-ma-boston", "right"), ("sg-one-north", "left")):
        city = build_city(location, 3)
        g, ranks = city.graph, movement_ranks(city.graph, city.left_hand)
        for e in np.flatnonzero(g.is_connector):
            assert ranks[e] == {"straight": 2, near: 1}.get(g.turn[e], 0)


def test_actuated_green_extension_is_bounded_per_cycle():
    city = build_city("us-pa-pittsburgh-hazelwood", 2)
    lights = TrafficLights(city, np.random.default_rng(0))
    lights.green_at(0, 0, 10.0, GREEN_S - 0.05)   # arm 0 of intersection 0 about to turn yellow at t = 10 s
    t, held = 10.0, 0
    while lights.extend_green(0, 0, t, 0.05, 2.0):
        assert lights.codes(t)[0, 0] == GREEN
        t, held = t + 0.05, held + 1
    assert held == 40 and lights.codes(t + 0.1)[0, 0] == YELLOW
    assert not lights.extend_green(0, 0, t + ALL_RED_S + YELLOW_S, 0.05, 2.0)  # red: nothing to hold


@pytest.fixture(scope="module")
def boston():
    """A Boston world (two lanes per direction: the expert changes lanes) on the default counts."""
    city = build_city("us-ma-boston", 1234)
    cfg = SyntheticConfig(num_static=60)
    return city, cfg, World(city, cfg, seed=11, start_time_us=0)


def test_ego_box_never_overlaps_another_agent(boston):
    """The expert (IDM, stop rules, lane changes only into a safe gap) and the reactive traffic keep clear of it."""
    city, cfg, _ = boston
    for seed in (11, 12):
        world = World(city, cfg, seed=seed, start_time_us=0)
        for _ in range(500):
            world.step(0.05)
            snap = world.snapshot()
            e = snap.ego
            c = np.array([[e.x, e.y]]) + EGO_CENTER_OFFSET_M * np.array([[np.cos(e.yaw), np.sin(e.yaw)]])
            ego = shapely.Polygon(box_corners_2d(c, np.array([EGO_LENGTH_M]), np.array([EGO_WIDTH_M]),
                                                 np.array([e.yaw]))[0])
            near = [a for a in snap.actors if np.hypot(a.x - c[0, 0], a.y - c[0, 1]) < 15.0]
            for a in near:
                box = shapely.Polygon(box_corners_2d(np.array([[a.x, a.y]]), np.array([a.length]),
                                                     np.array([a.width]), np.array([a.yaw]))[0])
                assert ego.intersection(box).area < 1e-6, (seed, snap.timestamp_us, a.track_id, a.category)


def test_work_zones_line_the_kerbs_beside_the_route(boston):
    """Cones stand in lines along lane edges with a sign ahead, most beside the route; the kerb's parked cars stay,
    behind the cone line, and no box overlaps another."""
    _, cfg, world = boston
    acts = world.snapshot().actors
    statics = [a for a in acts if a.category in ("traffic_cone", "czone_sign", "barrier", "generic_object")]
    assert len(statics) == cfg.num_static
    cones = np.array([[a.x, a.y] for a in statics if a.category == "traffic_cone"])
    signs = np.array([[a.x, a.y] for a in statics if a.category == "czone_sign"])
    assert len(cones) >= 0.5 * cfg.num_static and len(signs) >= 0.1 * cfg.num_static
    nearest = np.sort(np.linalg.norm(cones[:, None] - cones[None], axis=2), axis=1)[:, 1]
    assert ZONE_CONE_GAP_M[0] - 0.3 < np.median(nearest) < ZONE_CONE_GAP_M[1] + 0.3  # cones stand in lines ...
    assert np.mean(nearest < 2 * ZONE_CONE_GAP_M[1] + 0.3) > 0.9  # ... with gaps where pedestrians cross
    to_cone = np.linalg.norm(signs[:, None] - cones[None], axis=2).min(axis=1)
    # every sign belongs to a line of cones (its first cones may be left out where pedestrians cross: a crossing's
    # keep-clear circle, 3.4 m across, holds at most two cones of a line)
    assert np.all(to_cone < ZONE_SIGN_AHEAD_M[1] + 2 * ZONE_CONE_GAP_M[1] + 0.5)
    route = shapely.LineString(world.route_polyline()[world.route.cum <= 200.0])
    beside = [route.distance(shapely.Point(*xy)) < 16.0 for xy in cones]
    assert np.mean(beside) > 0.5
    parked = [a for a in acts if a.category == "vehicle" and a.track_id > len(world.traffic.tid)]
    boxes = [shapely.Polygon(box_corners_2d(np.array([[a.x, a.y]]), np.array([a.length]), np.array([a.width]),
                                            np.array([a.yaw]))[0]) for a in parked + statics]
    to_car = np.linalg.norm(cones[:, None] - np.array([[a.x, a.y] for a in parked])[None], axis=2).min(axis=1)
    assert np.sum(to_car < 2.5) >= 3  # parked cars right behind cones
    tree = shapely.STRtree(boxes)
    for i, j in zip(*tree.query(boxes, predicate="intersects")):
        assert i == j or boxes[i].intersection(boxes[j]).area < 1e-6
