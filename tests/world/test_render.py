"""Synthetic sensors: rig sanity, the lens model, camera rendering (colours, occlusion, markings) and lidar geometry."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from shapely.geometry import LineString, box

from drivepipe.config import CAMERA_CHANNELS, SyntheticConfig
from drivepipe.mapdata import MapFeature, VectorMap
from drivepipe.utils.geometry import pose_to_transform, transform_points
from drivepipe.world import ground, ground_texture, render_camera
from drivepipe.world.render_camera import actor_colour, render_cameras
from drivepipe.world.render_lidar import render_lidar
from drivepipe.world.rig import default_rig, project_points
from drivepipe.world_state import ActorState, EgoKinematics, WorldSnapshot

W, H = 240, 136
DIVIDER_Y = 2.0  # global y of the painted lane divider (the ego drives at y = 0, heading +x)
EDGE_Y = -4.0    # painted right road edge


@pytest.fixture(scope="module")
def vmap() -> VectorMap:
    layers = {
        "road_segments": [MapFeature(1, box(-100, -4.0, 200, 6.0))],
        "lanes_polygons": [MapFeature(2, box(-100, -4.0, 200, 2.0)), MapFeature(3, box(-100, 2.0, 200, 6.0))],
        "boundaries": [MapFeature(4, LineString([(-100, DIVIDER_Y), (200, DIVIDER_Y)])),
                       MapFeature(7, LineString([(-100, EDGE_Y), (200, EDGE_Y)]))],
        "walkways": [MapFeature(5, box(-100, 6.0, 200, 9.0))],
        "crosswalks": [MapFeature(6, box(40, -4.0, 44, 6.0))],
    }
    return VectorMap("test-city", "1.0", 32611, layers)


@pytest.fixture(scope="module")
def rig():
    return default_rig(W, H)


def _snapshot(*actors: ActorState, t_us: int = 1_000_000, ego: EgoKinematics | None = None) -> WorldSnapshot:
    ego = ego or EgoKinematics(x=0.0, y=0.0, yaw=0.0)
    return WorldSnapshot(timestamp_us=t_us, ego=ego, actors=tuple(actors))


def _car(track_id: int, x: float, y: float, *, length=4.5, width=1.9, height=1.6, yaw=0.0, cat="vehicle"):
    return ActorState(track_id, cat, x, y, height / 2, yaw, length, width, height)


def _pixel(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    u, v = np.rint(uv).astype(int)
    return image[v, u].astype(int)


def test_rig_sanity(rig):
    assert set(rig.cameras) == set(CAMERA_CHANNELS)
    for calib in rig.cameras.values():
        R = calib.T_ego_from_cam[:3, :3]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)
        assert 1.6 <= calib.T_ego_from_cam[2, 3] <= 1.9 and calib.distortion.shape == (5,)
    assert np.linalg.norm(rig.T_ego_from_lidar[:3, 3]) > 1.0
    f0 = rig.cameras["CAM_F0"]
    uv, depth = project_points(f0, np.array([[f0.T_ego_from_cam[0, 3] + 20.0, 0.0, f0.T_ego_from_cam[2, 3]]]))
    assert depth[0] > 19.0
    assert abs(uv[0, 0] - W / 2) < 0.05 * W and abs(uv[0, 1] - H / 2) < 0.15 * H
    # the left and right cameras look to the left and right
    for channel, side in (("CAM_L1", 1.0), ("CAM_R1", -1.0)):
        _, d = project_points(rig.cameras[channel], np.array([[1.0, side * 10.0, 1.0]]))
        assert d[0] > 8.0


def test_project_points_matches_opencv(rig):
    calib = rig.cameras["CAM_L0"]
    pts = np.array([[8.0, 6.0, 0.0], [5.0, 9.0, 1.5], [12.0, 4.0, 0.5]])
    uv, depth = project_points(calib, pts)
    T = np.linalg.inv(calib.T_ego_from_cam)
    ref, _ = cv2.projectPoints(pts, cv2.Rodrigues(T[:3, :3])[0], T[:3, 3], calib.intrinsic, calib.distortion)
    assert (depth > 0).all()
    np.testing.assert_allclose(uv, ref.reshape(-1, 2), atol=1e-6)
    behind, _ = project_points(calib, np.array([[-10.0, -10.0, 1.0]]))
    assert np.isnan(behind).all()


def test_actor_centre_and_face_are_drawn_in_its_colour(vmap, rig):
    car = _car(7, 14.0, 0.0)
    empty = render_cameras(vmap, _snapshot(), rig, ["CAM_F0"])["CAM_F0"]
    image = render_cameras(vmap, _snapshot(car), rig, ["CAM_F0"])["CAM_F0"]
    calib = rig.cameras["CAM_F0"]
    colour = np.array(actor_colour("vehicle", 7))
    for point in ([14.0, 0.0, 0.8], [14.0 - 2.25, 0.0, 0.8]):  # box centre, centre of the face towards us
        uv, _ = project_points(calib, np.array([point]))
        assert np.abs(_pixel(image, uv[0]) - _pixel(empty, uv[0])).sum() > 30
        rgb = _pixel(image, uv[0])
        ratio = rgb / np.maximum(colour, 1)
        assert 0.35 < ratio.min() and ratio.max() < 1.05  # a shade of the actor's colour
    assert actor_colour("vehicle", 7) == actor_colour("vehicle", 7)


def test_nearer_actor_hides_the_one_behind(vmap, rig):
    truck = _car(1, 10.0, 0.0, length=8.0, width=2.6, height=3.2)
    hidden = _car(2, 25.0, 0.0)
    calib = rig.cameras["CAM_F0"]
    uv, _ = project_points(calib, np.array([[25.0, 0.0, 0.8]]))
    only_hidden = render_cameras(vmap, _snapshot(hidden), rig, ["CAM_F0"])["CAM_F0"]
    empty = render_cameras(vmap, _snapshot(), rig, ["CAM_F0"])["CAM_F0"]
    assert np.abs(_pixel(only_hidden, uv[0]) - _pixel(empty, uv[0])).sum() > 30
    only_truck = render_cameras(vmap, _snapshot(truck), rig, ["CAM_F0"])["CAM_F0"]
    both = render_cameras(vmap, _snapshot(truck, hidden), rig, ["CAM_F0"])["CAM_F0"]
    np.testing.assert_array_equal(both, only_truck)  # the far car is completely hidden, whatever the order


def test_lane_divider_is_curved_by_the_lens_and_straight_after_undistortion(vmap, rig):
    calib = rig.cameras["CAM_R0"]  # the road edge crosses this camera's view far from its principal point
    xs = np.linspace(3.0, 15.0, 12)
    line = np.stack([xs, np.full_like(xs, EDGE_Y), np.zeros_like(xs)], axis=1)
    uv, _ = project_points(calib, line)
    assert not np.isnan(uv).any()
    assert (uv[:, 0] > 2).all() and (uv[:, 0] < W - 3).all() and (uv[:, 1] > 2).all() and (uv[:, 1] < H - 3).all()

    def residual(p: np.ndarray) -> float:  # max distance from the chord through the end points
        d = p[-1] - p[0]
        n = np.array([-d[1], d[0]]) / np.linalg.norm(d)
        return float(np.abs((p - p[0]) @ n).max())

    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    undist = cv2.undistortPoints(uv.reshape(-1, 1, 2), calib.intrinsic, calib.distortion, None, calib.intrinsic,
                                 criteria=criteria).reshape(-1, 2)
    assert residual(uv) > 2.0 and residual(undist) < 0.05
    image = render_cameras(vmap, _snapshot(), rig, ["CAM_R0"])["CAM_R0"]
    for u, v in np.rint(uv).astype(int):  # the painted line is where the model puts it
        assert image[v - 1:v + 2, u - 1:u + 2].min(axis=2).max() > 160


def test_renders_are_deterministic(vmap, rig):
    snap = _snapshot(_car(3, 12.0, 3.0, yaw=0.4), _car(4, -9.0, 0.0), _car(5, 6.0, -3.0, cat="pedestrian",
                                                                          length=0.6, width=0.6, height=1.8))
    first = render_cameras(vmap, snap, rig, CAMERA_CHANNELS)
    render_camera._GEOMETRY_CACHE.clear()
    ground._RASTER_CACHE.clear()
    second = render_cameras(vmap, snap, rig, CAMERA_CHANNELS)
    for channel in CAMERA_CHANNELS:
        assert first[channel].shape == (H, W, 3) and first[channel].dtype == np.uint8
        np.testing.assert_array_equal(first[channel], second[channel])
    cfg = SyntheticConfig()
    np.testing.assert_array_equal(render_lidar(vmap, snap, rig, cfg), render_lidar(vmap, snap, rig, cfg))


def _inside_box(points_ego: np.ndarray, actor: ActorState, tol: float) -> np.ndarray:
    c, s = np.cos(actor.yaw), np.sin(actor.yaw)
    d = points_ego - np.array([actor.x, actor.y, actor.z])
    local = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], axis=1)
    return (np.abs(local) <= np.array([actor.length, actor.width, actor.height]) / 2 + tol).all(axis=1)


def test_lidar_hits_lie_on_actors_or_the_ground(vmap, rig):
    actors = (_car(1, 32.0, 7.0), _car(2, 14.0, 10.5, yaw=0.3), _car(3, 25.0, 4.0, cat="pedestrian", length=0.6,
                                                                      width=0.6, height=1.8))
    ego = EgoKinematics(x=20.0, y=1.0, yaw=0.6)
    cfg = SyntheticConfig()
    points = render_lidar(vmap, _snapshot(*actors, ego=ego), rig, cfg)
    assert points.dtype == np.float32 and points.shape[1] == 6 and len(points) > 5000
    assert points[:, 4].min() >= 0 and points[:, 4].max() <= cfg.lidar_beams - 1
    assert set(np.unique(points[:, 5])) <= {0, 1, 2, 3, 4} and (points[:, 3] >= 0).all() and (points[:, 3] <= 255).all()
    assert np.linalg.norm(points[:, :3], axis=1).max() <= cfg.lidar_max_range_m + 0.05
    T_global_from_lidar = pose_to_transform(ego.x, ego.y, 0.0, ego.yaw) @ rig.T_ego_from_lidar
    world = transform_points(T_global_from_lidar, points[:, :3])
    on_ground = np.abs(world[:, 2]) < 0.05
    off_ground = ~on_ground
    on_actor = np.zeros(len(world), bool)
    for actor in actors:
        inside = _inside_box(world, actor, tol=0.05)
        assert inside.sum() > 10, f"actor {actor.track_id} not hit"
        on_actor |= inside
    assert on_actor[off_ground].all()  # everything above the ground is on some actor's box
    assert np.abs(world[~on_actor, 2]).max() < 0.05  # everything else is ground at z = 0


def test_lidar_paint_is_brighter_than_asphalt(vmap, rig):
    points = render_lidar(vmap, _snapshot(), rig, SyntheticConfig())
    ego = transform_points(rig.T_ego_from_lidar, points[:, :3])
    paint = np.abs(ego[:, 1] - DIVIDER_Y) < 0.04
    asphalt = (ego[:, 1] > -3.7) & (ego[:, 1] < 1.7) & (np.abs(ego[:, 0]) < 30.0)
    assert paint.sum() > 3
    assert points[paint, 3].mean() > points[asphalt, 3].mean() + 80


def test_ground_raster_labels():
    layers = {"road_segments": [MapFeature(1, box(-50, -4, 50, 4)), MapFeature(2, box(-2, -50, 6, 50))],
              "boundaries": [MapFeature(3, LineString([(-50, 1.0), (50, 1.0)]))],
              "crosswalks": [MapFeature(4, box(20, -4, 23, 4))]}
    vm = VectorMap("raster-city", "1.0", 32611, layers)
    raster = ground.ground_raster(vm, EgoKinematics(x=0.0, y=0.0, yaw=0.0))
    label = raster.label_at(np.array([[2.0, -2.0], [2.0, 20.0], [30.0, 1.0], [30.0, 10.0]]))
    # overlapping polygons stay filled (cv2 fills one call's contours even-odd), the divider is paint
    assert list(label) == [ground.LABEL_ASPHALT, ground.LABEL_ASPHALT, ground.LABEL_PAINT,
                           ground.LABEL_TERRAIN]
    stripes = raster.label_at(np.stack([np.full(40, 21.5), np.linspace(-3.5, 0.5, 40)], axis=1))
    assert {ground.LABEL_CROSSWALK, ground.LABEL_ASPHALT} == set(stripes.tolist())
    assert np.count_nonzero(np.diff(stripes.astype(int))) >= 6  # 0.5 m stripes across 4 m of crossing


def test_ground_grain_is_fixed_in_the_world():
    poses = [(345678.3, 4567890.1, 0.7), (345679.3, 4567893.1, 1.2)]  # UTM-sized coordinates
    rasters = [ground.GroundRaster(np.zeros((1200, 1200), np.uint8), 60.0, 0.1, p) for p in poses]
    points = np.array(poses[0][:2]) + np.random.default_rng(0).uniform(-40, 40, (200, 2))
    samples = []
    for raster in rasters:
        x, y, yaw = raster.pose
        d = points - [x, y]
        ego = np.stack([np.cos(yaw) * d[:, 0] + np.sin(yaw) * d[:, 1],
                        -np.sin(yaw) * d[:, 0] + np.cos(yaw) * d[:, 1]], axis=1)
        col, row = np.rint(raster.ego_to_pixel(ego)).astype(int).T
        samples.append(ground_texture._grain(raster)[row, col].astype(int))
    assert samples[0].std() > 3 and np.abs(samples[0] - samples[1]).mean() < 1.5
