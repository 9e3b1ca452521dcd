"""Synthetic world model: map layers, lane-following traffic, lights, pedestrians, expert ego, closed-loop override."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import shapely

from drivepipe.config import SyntheticConfig
from drivepipe.utils.geometry import box_corners_2d
from drivepipe.vehicle import EGO_WIDTH_M
from drivepipe.world.ego import EGO_CENTER_OFFSET_M, EGO_LENGTH_M, make_route
from drivepipe.world.roads import STOP_SETBACK_M, build_city
from drivepipe.world.traffic import RED
from drivepipe.world.world import World
from drivepipe.world_state import EgoKinematics

DT = 0.05
STEPS = 400
CFG = SyntheticConfig(scenes_per_log=5, scene_duration_s=3.0, num_vehicles=16, num_bicycles=2, num_pedestrians=8,
                      num_static=6)
NUM_MOVERS = CFG.num_vehicles + CFG.num_bicycles  # movers hold track ids 1..NUM_MOVERS; parked cars come later


def _is_mover(a) -> bool:
    return a.track_id <= NUM_MOVERS


def _footprints(snap, with_ego: bool = True) -> list[shapely.Polygon]:
    """Footprint polygons of vehicles and bicycles (plus the ego's box) of one snapshot."""
    acts = [a for a in snap.actors if a.category in ("vehicle", "bicycle")]  # movers and parked cars
    c = np.array([[a.x, a.y] for a in acts] + ([[snap.ego.x, snap.ego.y]] if with_ego else []), float).reshape(-1, 2)
    L = np.array([a.length for a in acts] + ([EGO_LENGTH_M] if with_ego else []))
    W = np.array([a.width for a in acts] + ([EGO_WIDTH_M] if with_ego else []))
    yaw = np.array([a.yaw for a in acts] + ([snap.ego.yaw] if with_ego else []))
    if with_ego:
        c[-1] += EGO_CENTER_OFFSET_M * np.array([np.cos(yaw[-1]), np.sin(yaw[-1])])
    return [shapely.Polygon(p) for p in box_corners_2d(c, L, W, yaw)]


@pytest.fixture(scope="module")
def run():
    """One Boston world (right-hand traffic) driven 400 steps by the expert; snapshots plus stop-line events."""
    city = build_city("us-ma-boston", 7)
    world = World(city, CFG, seed=7, start_time_us=1_600_000_000_000_000)
    g, tr = city.graph, world.traffic
    snaps, red_crossings, red_stops, red_age = [world.snapshot()], 0, 0, np.zeros((len(city.intersections), 4))
    for _ in range(STEPS):
        codes = world.lights.codes(world.time_s)
        red_age = np.where(codes == RED, red_age + DT, 0.0)
        before = g.length[tr.edge] - STOP_SETBACK_M - tr.s - tr.size[:, 0] / 2  # gap front -> stop point
        edge_before = tr.edge.copy()
        world.step(DT)
        after = g.length[tr.edge] - STOP_SETBACK_M - tr.s - tr.size[:, 0] / 2
        for i, e in enumerate(edge_before):
            if g.is_connector[e]:
                continue
            age = red_age[g.intersection[e], g.arm[e]]
            crossed = before[i] >= 0 and (after[i] < 0 or tr.edge[i] != e)
            red_crossings += int(crossed and age > 1.5)
            red_stops += int(age > 1.0 and tr.edge[i] == e and tr.v[i] < 0.05 and 0 <= after[i] < 1.5)
        snaps.append(world.snapshot())
    return city, world, snaps, red_crossings, red_stops


def test_map_layers_have_devkit_columns_and_lanes_lie_in_drivable_area():
    city = build_city("sg-one-north", 3)
    vm = city.vector_map
    required = {
        "lanes_polygons": {"lane_group_fid", "lane_fid", "lane_index", "left_boundary_fid", "right_boundary_fid",
                           "speed_limit_mps", "width"},
        "lane_connectors": {"exit_lane_fid", "entry_lane_fid", "exit_lane_group_fid", "entry_lane_group_fid",
                            "lane_group_connector_fid", "intersection_fid", "turn_type_fid",
                            "traffic_light_stop_line_fids", "speed_limit_mps"},
        "gen_lane_connectors_scaled_width_polygons": {"lane_connector_fid"},
        "lane_group_connectors": {"from_lane_group_fid", "to_lane_group_fid", "intersection_fid"},
        "boundaries": {"boundary_type_fid"}, "intersections": {"intersection_type_fid"},
        "stop_polygons": {"stop_polygon_type_fid"}, "road_segments": {"lane_group_fids"},
    }
    for layer, cols in required.items():
        assert vm.layer(layer), layer
        for f in vm.layer(layer):
            assert cols <= set(f.props), (layer, cols - set(f.props))
    for layer, feats in vm.layers.items():
        assert len({f.fid for f in feats}) == len(feats), layer
        assert all(v is None or isinstance(v, (int, float, str)) for f in feats for v in f.props.values()), layer
    for layer in ("lane_groups_polygons", "crosswalks", "walkways", "carpark_areas", "traffic_lights"):
        assert vm.layer(layer), layer
    assert {f.props["boundary_type_fid"] for f in vm.layer("boundaries")} <= {0, 2, 3}  # 3: connector edges
    drivable = shapely.unary_union([f.geometry for name in ("road_segments", "intersections",
                                                            "generic_drivable_areas", "carpark_areas")
                                    for f in vm.layer(name)]).buffer(1e-6)
    for name in ("lanes_polygons", "gen_lane_connectors_scaled_width_polygons"):
        assert all(drivable.contains(f.geometry) for f in vm.layer(name)), name
    lanes = {f.props["lane_fid"]: f.geometry for f in vm.layer("lanes_polygons")}
    for f in vm.layer("baseline_paths"):
        if f.props["lane_fid"] is not None:
            assert lanes[f.props["lane_fid"]].buffer(1e-6).contains(f.geometry)
    assert 360_000 < city.origin[0] < 370_000 and (city.version, city.epsg) == ("9.17.1964", 32648)
    # Singapore drives on the left: every lane lies left of its road segment's centre line
    g = city.graph
    segments = [f.geometry for f in vm.layer("road_segments")]
    for e in np.flatnonzero(~g.is_connector):
        x, y, h = (float(v[0]) for v in g.pose_at(np.array([e]), np.array([g.length[e] / 2])))
        seg = next(s for s in segments if s.contains(shapely.Point(x, y)))
        c = seg.centroid
        assert -np.sin(h) * (x - c.x) + np.cos(h) * (y - c.y) > 1.0
    again = build_city("sg-one-north", 3).vector_map
    assert [f.geometry.wkb for f in again.layer("lane_connectors")] == [f.geometry.wkb
                                                                       for f in vm.layer("lane_connectors")]


def test_same_seed_gives_identical_snapshots():
    city = build_city("us-nv-las-vegas-strip", 5)
    a, b = World(city, CFG, 11, 0), World(city, CFG, 11, 0)
    for _ in range(200):
        a.step(DT)
        b.step(DT)
    assert a.snapshot() == b.snapshot()
    assert a.snapshot().timestamp_us == 200 * 50_000
    c = World(city, CFG, 12, 0)
    assert c.snapshot().actors != World(city, CFG, 11, 0).snapshot().actors


def test_actor_counts_sizes_and_track_ids(run):
    _, _, snaps, _, _ = run
    cats = [a.category for a in snaps[0].actors]
    movers = [a.category for a in snaps[0].actors if _is_mover(a)]
    assert movers.count("vehicle") == 16 and movers.count("bicycle") == 2 and cats.count("pedestrian") == 8
    assert sum(c in ("traffic_cone", "barrier", "czone_sign", "generic_object") for c in cats) == 6
    parked = [a for a in snaps[0].actors if a.category == "vehicle" and not _is_mover(a)]
    assert len(parked) > 10 and all(a.vx == a.vy == 0.0 for a in parked)
    ids = [a.track_id for a in snaps[0].actors]
    assert len(set(ids)) == len(ids) and min(ids) >= 1
    for a in snaps[0].actors:
        assert a.z == pytest.approx(a.height / 2)
        if a.category == "vehicle":  # car .. bus
            assert 3.8 <= a.length <= 12.0 and 1.65 <= a.width <= 2.55
    for s in snaps:
        assert [a.track_id for a in s.actors] == ids


def test_vehicles_stay_on_lanes_and_never_overlap(run):
    city, _, snaps, _, _ = run
    vm = city.vector_map
    lanes = shapely.unary_union([f.geometry for name in ("lanes_polygons", "gen_lane_connectors_scaled_width_polygons")
                                 for f in vm.layer(name)]).buffer(0.5)
    for snap in snaps:
        xy = np.array([[a.x, a.y] for a in snap.actors if _is_mover(a)])
        assert shapely.contains_xy(lanes, xy[:, 0], xy[:, 1]).all()
        polys = _footprints(snap)
        tree = shapely.STRtree(polys)
        for i, j in zip(*tree.query(polys, predicate="intersects")):
            assert i == j or polys[i].intersection(polys[j]).area < 1e-6, (snap.timestamp_us, i, j)


def test_vehicles_stop_at_red_and_do_not_run_it(run):
    _, _, _, red_crossings, red_stops = run
    assert red_stops > 0
    assert red_crossings == 0


def test_pedestrians_stay_on_crosswalks_and_walkways_and_cross(run):
    city, world, snaps, _, _ = run
    vm = city.vector_map
    ped_area = shapely.unary_union([f.geometry for name in ("crosswalks", "walkways")
                                    for f in vm.layer(name)]).buffer(0.05)
    street = shapely.unary_union([ped_area] + [f.geometry for f in vm.layer("road_segments")]).buffer(0.05)
    crossings = shapely.unary_union([f.geometry for f in vm.layer("crosswalks")])
    jay = set(world.traffic.p_tid[world.traffic.p_jay].tolist())  # mid-block crossers also use the road
    assert jay
    on_road = 0
    for snap in snaps:
        peds = [a for a in snap.actors if a.category == "pedestrian"]
        xy = np.array([[a.x, a.y] for a in peds if a.track_id not in jay])
        assert shapely.contains_xy(ped_area, xy[:, 0], xy[:, 1]).all()
        xy_jay = np.array([[a.x, a.y] for a in peds if a.track_id in jay])
        assert shapely.contains_xy(street, xy_jay[:, 0], xy_jay[:, 1]).all()
        on_road += int(shapely.contains_xy(crossings, xy[:, 0], xy[:, 1]).sum())
    assert on_road > 0


def test_velocities_match_finite_differences(run):
    _, _, snaps, _, _ = run
    for s0, s1 in itertools.pairwise(snaps):
        for a0, a1 in zip(s0.actors, s1.actors):
            fd = np.array([a1.x - a0.x, a1.y - a0.y]) / DT
            mean_v = 0.5 * np.array([a0.vx + a1.vx, a0.vy + a1.vy])
            assert np.linalg.norm(fd - mean_v) < 0.2, (a0.track_id, a0.category, fd, mean_v)
        e0, e1 = s0.ego, s1.ego
        fd = np.array([e1.x - e0.x, e1.y - e0.y]) / DT
        v = 0.5 * (e0.vx * np.array([np.cos(e0.yaw), np.sin(e0.yaw)]) + e1.vx * np.array([np.cos(e1.yaw), np.sin(e1.yaw)]))
        assert np.linalg.norm(fd - v) < 0.2


def test_ego_follows_route_with_turns_and_makes_progress(run):
    city, world, snaps, _, _ = run
    route = world.route
    assert route.length >= 1.3 * 11.0 * (CFG.scenes_per_log * CFG.scene_duration_s)
    assert any(city.graph.turn[e] != "straight" for e in route.edges)
    ids = world.route_roadblock_ids()
    roadblocks = {f.fid for name in ("lane_groups_polygons", "lane_group_connectors")
                  for f in city.vector_map.layer(name)}
    assert len(ids) >= 5 and set(ids) <= roadblocks
    poly = shapely.LineString(world.route_polyline())
    for snap in snaps:
        assert poly.distance(shapely.Point(snap.ego.x, snap.ego.y)) < 1.0
    start = np.array([snaps[0].ego.x, snaps[0].ego.y])
    assert poly.project(shapely.Point(snaps[-1].ego.x, snaps[-1].ego.y)) - poly.project(shapely.Point(*start)) > 40.0
    speeds = [s.ego.vx for s in snaps]
    assert max(speeds) < 11.5 and max(speeds) > 6.0
    tags = {t for s in snaps for t, _ in s.scenario_tags}
    assert {"medium_magnitude_speed", "on_intersection"} <= tags
    assert all(s.traffic_lights and set(s.traffic_lights.values()) <= {"green", "yellow", "red"} for s in snaps)


def _lane_with_room(world: World) -> int:
    g = world.graph
    lanes = [e for e in np.flatnonzero(~g.is_connector) if e not in world.route.edges]
    return int(max(lanes, key=lambda e: g.length[e]))


@pytest.mark.parametrize("reactive", [True, False])
def test_external_ego_override_and_reactivity(reactive):
    """A standing ego placed ahead of a vehicle on its lane: the vehicle stops behind it only if reactive."""
    city = build_city("us-pa-pittsburgh-hazelwood", 2)
    cfg = replace(CFG, num_vehicles=1, num_bicycles=0, num_pedestrians=0, num_static=0)
    world = World(city, cfg, 3, 0)
    world.reactive = reactive
    g, tr = world.graph, world.traffic
    e = _lane_with_room(world)
    tr.edge[0], tr.s[0], tr.v[0] = e, 4.0, 8.0
    tr.nxt[0] = g.successors[e][0]
    # put the lane on the ego route so the world can place the ego on the lane graph
    world.route = make_route(g, [e, g.successors[e][0]])
    x, y, h = (float(v[0]) for v in g.pose_at(np.array([e]), np.array([g.length[e] - 12.0])))
    ego = EgoKinematics(x=x, y=y, yaw=h)
    world.ego = replace(world.ego, route_s=g.length[e] - 12.0)
    overlap = False
    for _ in range(200):
        world.step(DT, ego=ego)
        snap = world.snapshot()
        assert (snap.ego.x, snap.ego.y, snap.ego.yaw, snap.ego.vx) == (x, y, h, 0.0)
        fp = _footprints(snap)
        overlap |= fp[0].intersection(fp[-1]).area > 1e-6
    assert overlap != reactive
