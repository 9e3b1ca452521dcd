"""The synthetic dataset read the way nuPlan's tooling reads it (issue 13): connector boundaries, GeoPackage raster
tiles, scenario history/future inside the log, sensor rates and offsets, image matching, yaw range, track spans."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import shapely

from drivepipe.config import CAMERA_CHANNELS, SyntheticConfig
from drivepipe.mapdata import SEMANTIC_LAYERS
from drivepipe.nuplan.db import NuplanLog
from drivepipe.nuplan.gpkg import read_gpkg
from drivepipe.nuplan.gpkg_raster import TILE_SIZE, raster_layer_names, read_raster_layer
from drivepipe.nuplan.scenarios import SCENES_DROPPED_EACH_END, enumerate_scenarios
from drivepipe.world import timeline
from drivepipe.world.generate import SWEEP_HZ, plan_logs
from drivepipe.world.roads import LANE_WIDTH_M
from drivepipe.world.writer import LOCATION_INFO

LOCATION = "sg-one-north"  # one of the session dataset's (tests/conftest.py) locations


def _gpkg(root: Path) -> Path:
    return root / "maps" / LOCATION / LOCATION_INFO[LOCATION][2] / "map.gpkg"


def _dbs(root: Path) -> list[Path]:
    return sorted((root / "nuplan-v1.1" / "splits" / "mini").glob("*.db"))


# ------------------------------------------------------------------------------------------------------- maps
def test_connector_boundaries_resolve_and_run_along_the_connector_edges(synthetic_root: Path) -> None:
    vmap = read_gpkg(_gpkg(synthetic_root), LOCATION, "v")  # reprojected from the stored WGS84 back to UTM
    boundaries = {f.fid: f.geometry for f in vmap.layers["boundaries"]}
    centre = {f.fid: f.geometry for f in vmap.layers["lane_connectors"]}
    polys = vmap.layers["gen_lane_connectors_scaled_width_polygons"]
    assert len(polys) == len(centre) > 0
    for poly in polys:
        line = centre[poly.props["lane_connector_fid"]]
        ends = np.asarray(line.coords)[[0, -1]]
        for side, sign in (("left", 1.0), ("right", -1.0)):
            edge = boundaries[int(poly.props[f"{side}_boundary_fid"])]  # KeyError here = a dangling reference
            pts = np.asarray(edge.coords)
            np.testing.assert_allclose(shapely.distance(shapely.points(pts), line), LANE_WIDTH_M / 2, atol=0.01)
            assert shapely.distance(shapely.points(pts), poly.geometry.exterior).max() < 0.01
            # on the stated side of the direction of travel, and running the same way as the connector
            s = line.project(shapely.points(pts))
            on_line = np.asarray([line.interpolate(v).coords[0] for v in s])
            ahead = np.asarray([line.interpolate(min(v + 0.1, line.length)).coords[0] for v in s])
            tangent = ahead - on_line
            cross = tangent[:, 0] * (pts[:, 1] - on_line[:, 1]) - tangent[:, 1] * (pts[:, 0] - on_line[:, 0])
            assert (np.sign(cross[:-1]) == sign).all()
            np.testing.assert_allclose(np.linalg.norm(pts[[0, -1]] - ends, axis=1), LANE_WIDTH_M / 2, atol=0.01)


def test_connector_edges_are_not_lane_dividers(synthetic_root: Path) -> None:
    """The connector boundaries are virtual (no paint inside an intersection): the `lane_divider` class (BEV target,
    painted ground) leaves them out, while the `boundaries` layer has them."""
    from drivepipe.utils.geometry import pose_to_transform

    vmap = read_gpkg(_gpkg(synthetic_root), LOCATION, "v")
    box = vmap.layers["intersections"][0].geometry.envelope.centroid
    near = vmap.semantic_layers_in_ego(pose_to_transform(box.x, box.y, 0.0, 0.0), 5.0, ("lane_divider", "lane"))
    square = shapely.box(box.x - 5, box.y - 5, box.x + 5, box.y + 5)
    assert near["lane"] and not near["lane_divider"]
    assert any(f.geometry.intersects(square) for f in vmap.layers["boundaries"])


def test_raster_tiles_are_valid_geopackage_tiles(synthetic_root: Path) -> None:
    import cv2

    path = _gpkg(synthetic_root)
    assert raster_layer_names(path) == ["drivable_area", "intersection", "pedestrian_crossing", "walkway"]
    epsg = LOCATION_INFO[LOCATION][1]
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA application_id").fetchone() == (0x47504B47,)
    for name in raster_layer_names(path):
        srs, x0, y0, x1, y1 = con.execute("SELECT srs_id, min_x, min_y, max_x, max_y FROM gpkg_tile_matrix_set "
                                          "WHERE table_name = ?", (name,)).fetchone()
        assert srs == epsg and con.execute("SELECT organization_coordsys_id FROM gpkg_spatial_ref_sys WHERE "
                                           "srs_id = ?", (srs,)).fetchone() == (epsg,)
        (zoom, mw, mh, tw, th, px, py), = con.execute(
            "SELECT zoom_level, matrix_width, matrix_height, tile_width, tile_height, pixel_x_size, pixel_y_size "
            "FROM gpkg_tile_matrix WHERE table_name = ?", (name,)).fetchall()
        assert (zoom, tw, th) == (0, TILE_SIZE, TILE_SIZE) and px == py > 0
        assert math.isclose(x1 - x0, mw * tw * px) and math.isclose(y1 - y0, mh * th * py)  # spec requirement
        cx0, cy0, cx1, cy1, csrs = con.execute("SELECT min_x, min_y, max_x, max_y, srs_id FROM gpkg_contents "
                                               "WHERE table_name = ? AND data_type = 'tiles'", (name,)).fetchone()
        assert csrs == epsg and x0 <= cx0 < cx1 <= x1 and y0 <= cy0 < cy1 <= y1
        cols = [r[1] for r in con.execute(f'PRAGMA table_info("{name}")')]
        assert cols == ["id", "zoom_level", "tile_column", "tile_row", "tile_data"]
        tiles = con.execute(f'SELECT tile_column, tile_row, tile_data FROM "{name}"').fetchall()
        assert sorted((c, r) for c, r, _ in tiles) == [(c, r) for c in range(mw) for r in range(mh)]
        for _, _, blob in tiles:
            assert blob[:8] == b"\x89PNG\r\n\x1a\n"
            tile = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_UNCHANGED)
            assert tile.shape == (TILE_SIZE, TILE_SIZE) and set(np.unique(tile)) <= {0, 255}


def test_drivable_raster_is_georeferenced_like_the_vector_layers(synthetic_root: Path) -> None:
    raster = read_raster_layer(_gpkg(synthetic_root), "drivable_area")
    npz = np.load(_gpkg(synthetic_root).with_name("drivable_area.npy.npz"))["data"]
    np.testing.assert_array_equal(raster.data, npz * 255)
    vmap = read_gpkg(_gpkg(synthetic_root), LOCATION, "v")
    drivable = shapely.union_all([f.geometry for name in SEMANTIC_LAYERS["drivable_area"] for f in vmap.layer(name)])

    def value_at(p: shapely.Point) -> int:
        col = int((p.x - raster.min_x) // raster.pixel_size)
        row = int((raster.max_y - p.y) // raster.pixel_size)
        return int(raster.data[row, col])

    inside = [f.geometry.buffer(-1.5) for f in vmap.layers["road_segments"]]
    samples = [shapely.Point(c) for g in inside for c in np.asarray(g.exterior.coords)[::3]]
    assert samples and all(value_at(p) == 255 for p in samples)
    walk = [f.geometry.buffer(-1.5).representative_point() for f in vmap.layers["walkways"]]
    walk = [p for p in walk if p.distance(drivable) > 1.5]
    assert walk and all(value_at(p) == 0 for p in walk)


def test_raster_layers_open_with_gdal(synthetic_root: Path) -> None:
    rasterio = pytest.importorskip("rasterio")  # optional test dependency (requirements.txt)
    path = _gpkg(synthetic_root)
    ours = read_raster_layer(path, "drivable_area")
    with rasterio.open(f"GPKG:{path}:drivable_area") as ds:  # how the devkit opens it
        assert ds.crs.to_epsg() == LOCATION_INFO[LOCATION][1]
        assert ds.shape == ours.data.shape
        t = ds.transform
        assert (t.a, t.e) == (ours.pixel_size, -ours.pixel_size)
        np.testing.assert_allclose((t.c, t.f), (ours.min_x, ours.max_y), rtol=0, atol=1e-6)
        np.testing.assert_array_equal(ds.read(1), ours.data)


# ------------------------------------------------------------------------------------------------------- logs
def test_default_logs_give_every_scenario_2s_history_and_8s_future() -> None:
    for plan in plan_logs(SyntheticConfig()):
        scene_s = plan.sweeps_per_scene / SWEEP_HZ
        num_scenes = plan.num_sweeps // plan.sweeps_per_scene
        first_anchor_s = SCENES_DROPPED_EACH_END * scene_s
        last_anchor_s = (num_scenes - SCENES_DROPPED_EACH_END) * scene_s - 1 / SWEEP_HZ
        log_end_s = (plan.num_sweeps - 1) / SWEEP_HZ
        assert first_anchor_s >= 2.0 and log_end_s - last_anchor_s >= 8.0


def test_ego_poses_at_100hz_and_each_sweep_links_the_nearest(synthetic_root: Path) -> None:
    for db in _dbs(synthetic_root):
        con = sqlite3.connect(db)
        poses = con.execute("SELECT token, timestamp FROM ego_pose ORDER BY timestamp").fetchall()
        pose_ts = np.array([t for _, t in poses])
        assert set(np.diff(pose_ts)) == {timeline.POSE_US}
        sweeps = con.execute("SELECT l.timestamp, e.timestamp FROM lidar_pc l JOIN ego_pose e "
                             "ON e.token = l.ego_pose_token ORDER BY l.timestamp").fetchall()
        sweep_ts, linked_ts = np.array(sweeps).T
        assert len(pose_ts) == timeline.POSE_HZ // SWEEP_HZ * len(sweep_ts)  # higher rate than the sweeps
        nearest = pose_ts[np.abs(pose_ts[None, :] - sweep_ts[:, None]).argmin(axis=1)]
        np.testing.assert_array_equal(linked_ts, nearest)
        assert (linked_ts != sweep_ts).all()  # its own clock, as in nuPlan


def test_cameras_at_10hz_staggered_and_image_matching_unambiguous(synthetic_root: Path) -> None:
    for db in _dbs(synthetic_root):
        con = sqlite3.connect(db)
        sweeps = con.execute("SELECT timestamp, ego_pose_token FROM lidar_pc ORDER BY timestamp").fetchall()
        sweep_ts = np.array([t for t, _ in sweeps])
        offsets = {}
        for ch in CAMERA_CHANNELS:
            rows = con.execute("SELECT i.timestamp, i.ego_pose_token FROM image i JOIN camera c ON c.token = "
                               "i.camera_token WHERE c.channel = ? ORDER BY i.timestamp", (ch,)).fetchall()
            ts = np.array([t for t, _ in rows])
            assert np.abs(np.diff(ts) - 100_000).max() <= 2 * timeline.CAMERA_JITTER_US  # 10 Hz
            trigger = np.searchsorted(sweep_ts, ts, side="right") - 1
            off = ts - sweep_ts[trigger]
            assert (off > 0).all() and (off < 25_000).all() and (trigger % 2 == 0).all()
            offsets[ch] = float(np.median(off))
            # an image links the ego pose of its trigger sweep (the devkit's include_cameras join)
            assert [p for _, p in rows] == [sweeps[k][1] for k in trigger]
            # every sweep's ±50 ms match is unique: the two nearest images are never equally far
            d = np.sort(np.abs(ts[None, :] - sweep_ts[:, None]), axis=1)
            assert (d[:, 0] < 50_000).all() and (d[:, 0] != d[:, 1]).all()
        assert len(set(offsets.values())) == len(CAMERA_CHANNELS)  # staggered per channel
        with NuplanLog(db, synthetic_root / "nuplan-v1.1" / "sensor_blobs", None) as log:
            for ch in CAMERA_CHANNELS:
                rows = log.image_rows(ch)
                expect = np.abs(log.images[ch].timestamp_us[None, :] - sweep_ts[:, None]).argmin(axis=1)
                np.testing.assert_array_equal(rows, expect)


def test_include_cameras_anchors_are_the_sweeps_whose_pose_the_images_share(synthetic_root: Path) -> None:
    for db in _dbs(synthetic_root):
        with NuplanLog(db, synthetic_root / "nuplan-v1.1" / "sensor_blobs", None) as log:
            every = enumerate_scenarios(log)
            with_cams = enumerate_scenarios(log, include_cameras=True)
            assert 0 < len(with_cams) and len(every) in (2 * len(with_cams), 2 * len(with_cams) - 1)
            for s in with_cams:
                pose = log.lidar_pcs.ego_pose_token[s.index]
                for ch in CAMERA_CHANNELS:
                    j = log.image_rows(ch)[s.index]
                    assert log.images[ch].ego_pose_token[j] == pose


def test_box_yaw_wrapped_and_tracks_within_lidar_range(synthetic_root: Path) -> None:
    max_range = SyntheticConfig().lidar_max_range_m
    partial = 0
    for db in _dbs(synthetic_root):
        con = sqlite3.connect(db)
        lo, hi = con.execute("SELECT MIN(yaw), MAX(yaw) FROM lidar_box").fetchone()
        assert -math.pi < lo and hi <= math.pi
        far = con.execute("SELECT MAX((b.x - e.x) * (b.x - e.x) + (b.y - e.y) * (b.y - e.y)) FROM lidar_box b JOIN "
                          "lidar_pc l ON l.token = b.lidar_pc_token JOIN ego_pose e ON e.token = l.ego_pose_token"
                          ).fetchone()[0]
        assert math.sqrt(far) <= max_range + 1.0  # + the ego's motion between sweep and linked pose
        n = con.execute("SELECT COUNT(*) FROM lidar_pc").fetchone()[0]
        partial += con.execute("SELECT COUNT(*) FROM (SELECT COUNT(*) AS c FROM lidar_box GROUP BY track_token) "
                               "WHERE c < ?", (n,)).fetchone()[0]
    assert partial > 0  # some track enters or leaves during the log


def test_partial_sensor_release_writes_exactly_the_frames_samples_anchor_on(tmp_path: Path) -> None:
    """A stride-2 release writes every second camera frame outside the edge scenes, and point clouds only at those sweeps:
    preprocess with `window_stride` 1 then anchors on the same sweeps as the full recording with stride 2, those
    frames' JPEGs and PCDs are byte-identical, and verify counts the other sweeps' clouds as unreleased."""
    from drivepipe.config import from_dict
    from drivepipe.nuplan.verify import verify_dataset
    from drivepipe.preprocess.windows import select_candidates
    from drivepipe.world.generate import generate_dataset

    small = {"num_logs": 1, "scenes_per_log": 5, "scene_duration_s": 1.0, "image_width": 64, "image_height": 36,
             "num_vehicles": 6, "num_bicycles": 0, "num_pedestrians": 4, "num_static": 1, "lidar_beams": 8,
             "lidar_azimuth_step_deg": 4.0, "locations": [LOCATION]}
    roots, anchors = {}, {}
    for name, release, stride in (("full", {"camera_stride": 1, "edge_scene_cameras": True, "lidar_release": "all"}, 2), ("partial", {"camera_stride": 2}, 1)):
        cfg = from_dict({"data": {"synthetic": small | release}, "preprocess": {
            "history_steps": 2, "future_steps": 2, "traj_dt_s": 0.5, "window_stride": stride}})
        roots[name] = tmp_path / name
        generate_dataset(cfg.data, roots[name], progress=False)
        (db,) = _dbs(roots[name])
        with NuplanLog(db, roots[name] / "nuplan-v1.1" / "sensor_blobs", None) as log:
            scenarios = enumerate_scenarios(log, include_cameras=True)
            sweep_ts = log.lidar_pcs.timestamp_us
            span = {log.log_name: (int(sweep_ts[0]), int(sweep_ts[-1]))}
            anchors[name] = [s.token for s in select_candidates(scenarios, cfg.preprocess, span)]
            ts = log.images["CAM_F0"].timestamp_us
            scene_of_image = (np.searchsorted(sweep_ts, ts, side="right") - 1) // SWEEP_HZ  # 1 s scenes
            if name == "partial":  # only the middle scene (2 of 0..4), at 5 Hz
                assert set(scene_of_image.tolist()) == {SCENES_DROPPED_EACH_END}
                assert np.abs(np.diff(ts) - 200_000).max() <= 2 * timeline.CAMERA_JITTER_US
            else:
                assert set(scene_of_image.tolist()) == set(range(5))
        report = verify_dataset(roots[name])
        assert report["num_problems"] == 0
        assert report["lidar_unreleased"] == (0 if name == "full" else 100 - 5)  # 5 s at 20 Hz, 5 anchors
    assert anchors["partial"] == anchors["full"] and len(anchors["full"]) == 5  # 1 s at 5 Hz
    jpegs = sorted((roots["partial"] / "nuplan-v1.1" / "sensor_blobs").rglob("*.jpg"))
    assert len(jpegs) == 5 * len(CAMERA_CHANNELS)
    clouds = sorted((roots["partial"] / "nuplan-v1.1" / "sensor_blobs").rglob("*.pcd"))
    assert len(clouds) == 5 and len(list((roots["full"] / "nuplan-v1.1" / "sensor_blobs").rglob("*.pcd"))) == 100
    for path in jpegs + clouds:
        assert path.read_bytes() == (roots["full"] / path.relative_to(roots["partial"])).read_bytes()
    clouds[2].unlink()  # a camera sweep's cloud is not optional: its scenario could not be built
    problems = verify_dataset(roots["partial"])["problems"]
    assert [p["file"] for p in problems] == [str(clouds[2])] and "lidar_pc.filename" in problems[0]["problem"]
