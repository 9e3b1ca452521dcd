"""LogWriter / write_maps: a tiny hand-made log must be a well-formed, reproducible nuPlan-format dataset."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from shapely.geometry import LineString, Polygon

from drivepipe.config import CAMERA_CHANNELS
from drivepipe.mapdata import MapFeature, VectorMap
from drivepipe.nuplan.gpkg import read_gpkg
from drivepipe.nuplan.pcd import read_point_cloud
from drivepipe.nuplan.pickles import loads_calibration
from drivepipe.nuplan.tables import TABLE_COLUMNS
from drivepipe.schema import CameraCalibration
from drivepipe.utils.geometry import make_transform
from drivepipe.world.writer import LOCATION_INFO, LogWriter, write_maps
from drivepipe.world_state import ActorState, EgoKinematics, WorldSnapshot

LOG = "2021.05.12.22.00.38_veh-35_01008_01009"
T0 = 1620856838000000
W, H = 32, 24
SCENES, SWEEPS_PER_SCENE = 5, 4


def _rig() -> SimpleNamespace:
    K = np.array([[20.0, 0, 16], [0, 20.0, 12], [0, 0, 1]])
    cams = {ch: CameraCalibration(ch, W, H, K, np.zeros(5), make_transform(np.eye(3), np.array([1.0, i, 1.5])))
            for i, ch in enumerate(CAMERA_CHANNELS)}
    return SimpleNamespace(cameras=cams, T_ego_from_lidar=make_transform(np.eye(3), np.array([1.3, 0, 1.9])))


def _snapshot(i: int) -> WorldSnapshot:
    x0, y0 = 664430.0, 3997700.0
    actors = [ActorState(track_id=7, category="vehicle", x=x0 + 10 + i, y=y0, z=0.8, yaw=0.1, length=4.5,
                         width=1.9, height=1.6, vx=20.0, vy=0.0),
              ActorState(track_id=2**40 + 3, category="pedestrian", x=x0, y=y0 + 5, z=0.9, yaw=1.0, length=0.6,
                         width=0.6, height=1.8)]
    if i < 9:  # a track that leaves the scene
        actors.append(ActorState(track_id=11, category="traffic_cone", x=x0 + 3, y=y0 - 3, z=0.3, yaw=0.0,
                                 length=0.4, width=0.4, height=0.6))
    tags = (("following_lane_with_lead", 7),) if i % 5 == 0 else (("stationary", None),) if i == 3 else ()
    return WorldSnapshot(timestamp_us=T0 + 50_000 * i + (i % 3), actors=tuple(actors),
                         ego=EgoKinematics(x=x0 + i, y=y0, yaw=0.2, vx=5.0, ax=0.5, yaw_rate=0.01),
                         traffic_lights={12: "green", 4: "red"}, scenario_tags=tags)


def _write_log(root: Path) -> Path:
    w = LogWriter(root, LOG, "us-nv-las-vegas-strip", _rig(), "veh-35", T0, jpeg_quality=80)
    rng = np.random.default_rng(0)
    for i in range(SCENES * SWEEPS_PER_SCENE):
        pts = rng.normal(size=(100 + i, 6)).astype(np.float32)
        images = None
        if i % 2 == 0:
            images = {ch: rng.integers(0, 255, (H, W, 3), dtype=np.uint8) for ch in CAMERA_CHANNELS}
        w.add_sweep(_snapshot(i), pts, images, scene_index=i // SWEEPS_PER_SCENE)
    return w.close([[1, 2], [2, 3], [3], [], [4, 5]])


@pytest.fixture(scope="module")
def log_db(tmp_path_factory) -> Path:
    return _write_log(tmp_path_factory.mktemp("logw"))


def _chain(con: sqlite3.Connection, table: str, where: str = "1") -> list[bytes]:
    """Follow next_token from the head; check prev_token agrees; return tokens in order."""
    rows = {r[0]: r[1:] for r in con.execute(f"SELECT token, prev_token, next_token FROM {table} WHERE {where}")}
    heads = [t for t, (prev, _) in rows.items() if prev is None]
    assert len(heads) == 1, (table, where)
    order, tok = [], heads[0]
    while tok is not None:
        order.append(tok)
        nxt = rows[tok][1]
        assert nxt is None or rows[nxt][0] == tok
        tok = nxt
    assert len(order) == len(rows)
    return order


def test_tables_columns_and_tokens(log_db: Path) -> None:
    assert log_db.name == f"{LOG}.db" and log_db.parent.name == "mini"
    con = sqlite3.connect(log_db)
    for table, cols in TABLE_COLUMNS.items():
        info = [r[1] for r in con.execute(f"PRAGMA table_info({table})")]
        assert tuple(info) == cols
        for c in (c for c in cols if c == "token" or c.endswith("_token")):
            sizes = {r[0] for r in con.execute(f"SELECT DISTINCT length({c}) FROM {table}")}
            assert sizes <= {8, None}, (table, c, sizes)
    log = con.execute("SELECT logfile, location, map_version, date, vehicle_name FROM log").fetchall()
    assert log == [(LOG, "las_vegas", "us-nv-las-vegas-strip", "2021-05-12", "veh-35")]
    assert {r[0] for r in con.execute("SELECT name FROM category")} == {
        "vehicle", "bicycle", "pedestrian", "traffic_cone", "barrier", "czone_sign", "generic_object"}
    assert con.execute("SELECT COUNT(*), MIN(epsg), MAX(epsg) FROM ego_pose").fetchone() == (20, 32611, 32611)
    assert con.execute("SELECT channel FROM lidar").fetchall() == [("MergedPointCloud",)]


def test_calibration_and_tracks(log_db: Path) -> None:
    con = sqlite3.connect(log_db)
    rows = con.execute("SELECT channel, translation, rotation, intrinsic, distortion, width, height FROM camera "
                       "ORDER BY channel").fetchall()
    assert [r[0] for r in rows] == sorted(CAMERA_CHANNELS)
    for ch, t, r, k, d, w, h in rows:
        assert loads_calibration(t, ch)[0] == 1.0 and loads_calibration(r, ch) == [1.0, 0.0, 0.0, 0.0]
        assert loads_calibration(k, ch) == [[20.0, 0.0, 16.0], [0.0, 20.0, 12.0], [0.0, 0.0, 1.0]]
        assert len(loads_calibration(d, ch)) == 5 and (w, h) == (W, H)
    tracks = {int.from_bytes(t, "big"): n for t, n in con.execute(
        "SELECT track.token, category.name FROM track JOIN category ON category.token = track.category_token")}
    assert tracks == {7: "vehicle", 2**40 + 3: "pedestrian", 11: "traffic_cone"}


def test_chains_scenes_and_time_matching(log_db: Path) -> None:
    con = sqlite3.connect(log_db)
    order = _chain(con, "lidar_pc")
    ts = [con.execute("SELECT timestamp FROM lidar_pc WHERE token = ?", (t,)).fetchone()[0] for t in order]
    assert ts == sorted(ts) and len(ts) == 20
    for cam_token, in con.execute("SELECT token FROM camera"):
        assert len(_chain(con, "image", f"camera_token = x'{cam_token.hex()}'")) == 10
    for track, n in ((7, 20), (2**40 + 3, 20), (11, 9)):
        assert len(_chain(con, "lidar_box", f"track_token = x'{track.to_bytes(8, 'big').hex()}'")) == n
    bad = con.execute("SELECT COUNT(*) FROM image i WHERE NOT EXISTS (SELECT 1 FROM lidar_pc p WHERE "
                      "p.ego_pose_token = i.ego_pose_token AND abs(p.timestamp - i.timestamp) <= 50000)").fetchone()
    assert bad == (0,)
    scenes = con.execute("SELECT s.name, s.roadblock_ids, e.timestamp, (SELECT MAX(p.timestamp) FROM lidar_pc p "
                         "WHERE p.scene_token = s.token) FROM scene s JOIN ego_pose e ON e.token = "
                         "s.goal_ego_pose_token ORDER BY s.name").fetchall()
    assert [s[1] for s in scenes] == ["1 2", "2 3", "3", "", "4 5"]
    assert all(goal >= last for _, _, goal, last in scenes)
    assert con.execute("SELECT COUNT(*) FROM traffic_light_status").fetchone() == (40,)
    tags = con.execute("SELECT type, agent_track_token FROM scenario_tag ORDER BY type").fetchall()
    assert tags[0][0] == "following_lane_with_lead" and int.from_bytes(tags[0][1], "big") == 7
    assert tags[-1] == ("stationary", None)


def test_blobs_decode_and_match_rows(log_db: Path) -> None:
    import cv2

    con = sqlite3.connect(log_db)
    sensor_root = log_db.parents[2] / "sensor_blobs"
    for filename, token in con.execute("SELECT filename, token FROM lidar_pc"):
        assert filename == f"{LOG}/MergedPointCloud/{token.hex()}.pcd"
        assert read_point_cloud(sensor_root / filename).shape[1] == 6
    filename, = con.execute("SELECT filename_jpg FROM image LIMIT 1").fetchone()
    img = cv2.imread(str(sensor_root / filename))
    assert img.shape == (H, W, 3)


def test_write_twice_gives_identical_bytes(tmp_path: Path) -> None:
    def tree(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    _write_log(tmp_path / "a")
    _write_log(tmp_path / "b")
    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert len(a) == 1 + 20 + 80 and a == b


def test_write_maps_all_four_locations(tmp_path: Path) -> None:
    x0, y0 = 331000.0, 4691000.0
    road = Polygon([(x0, y0), (x0 + 40, y0), (x0 + 40, y0 + 8), (x0, y0 + 8)])
    vm = VectorMap("us-ma-boston", "9.12.1817", 32619, {
        "road_segments": [MapFeature(1, road, {"lane_group_fids": "3"})],
        "lane_connectors": [MapFeature(2, LineString([(x0, y0 + 2), (x0 + 40, y0 + 2)]), {"exit_lane_fid": 4})]})
    city = SimpleNamespace(location="us-ma-boston", version="9.12.1817", epsg=32619, vector_map=vm)
    index_path = write_maps(tmp_path / "maps", [city])
    index = json.loads(index_path.read_text())
    assert set(index) == set(LOCATION_INFO)
    for loc, (_, epsg, version) in LOCATION_INFO.items():
        assert index[loc]["version"] == version
        back = read_gpkg(tmp_path / "maps" / loc / version / "map.gpkg", loc, version)
        assert back.epsg == epsg and "lane_connectors" in back.layers
    boston = read_gpkg(tmp_path / "maps" / "us-ma-boston" / "9.12.1817" / "map.gpkg", "b", "v")
    assert boston.layers["road_segments"][0].geometry.symmetric_difference(road).area < 1e-4
    entry = index["us-ma-boston"]["layers"]["drivable_area"]
    raster = np.load(tmp_path / "maps" / "us-ma-boston" / "9.12.1817" / "drivable_area.npy.npz")["data"]
    assert list(raster.shape) == entry["shape"] and 300 < raster.sum() < 450  # ~ 41 x 9 px at 1 m/px


@pytest.mark.slow
def test_generate_dataset_is_byte_reproducible(tmp_path: Path) -> None:
    from drivepipe.config import from_dict
    from drivepipe.world.generate import generate_dataset

    params = {"data": {"synthetic": {
        "num_logs": 2, "scenes_per_log": 5, "scene_duration_s": 0.6, "image_width": 64, "image_height": 48,
        "num_vehicles": 3, "num_bicycles": 1, "num_pedestrians": 2, "num_static": 2, "lidar_beams": 8,
        "lidar_azimuth_step_deg": 4.0, "locations": ["sg-one-north"], "workers": 1,
        # the full recording: 60 frames of 8 images at 10 Hz, a point cloud every sweep
        "camera_stride": 1, "edge_scene_cameras": True, "lidar_release": "all"}}}
    cfg = from_dict(params).data
    params["data"]["synthetic"]["workers"] = 2  # one process per log must give the same bytes
    cfg2 = from_dict(params).data
    summaries = [generate_dataset(c, tmp_path / name, progress=False) for c, name in ((cfg, "a"), (cfg2, "b"))]
    assert summaries[0] == summaries[1]
    assert summaries[0]["sweeps"] == 120 and summaries[0]["images"] == 60 * 8
    a = {str(p.relative_to(tmp_path / "a")): p.read_bytes() for p in sorted((tmp_path / "a").rglob("*"))
         if p.is_file()}
    b = {str(p.relative_to(tmp_path / "b")): p.read_bytes() for p in sorted((tmp_path / "b").rglob("*"))
         if p.is_file()}
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    db = tmp_path / "a" / "nuplan-v1.1" / "splits" / "mini" / f"{summaries[0]['logs'][0]}.db"
    con = sqlite3.connect(db)
    assert len(_chain(con, "lidar_pc")) == 60
    assert con.execute("SELECT COUNT(*) FROM scene").fetchone() == (5,)
    assert con.execute("SELECT COUNT(*) FROM lidar_box").fetchone()[0] > 0
    from drivepipe.nuplan.db import read_conditions
    from drivepipe.world.conditions import draw_conditions
    from drivepipe.world.generate import plan_logs

    conditions = read_conditions(con)  # the log's recording conditions, drawn from its seed
    assert conditions == vars(draw_conditions(plan_logs(cfg.synthetic)[0].seed))
    assert sum(k.endswith("map.gpkg") for k in a) == 4


def test_boxes_beyond_range_are_dropped_chains_split_and_yaw_wrapped(tmp_path: Path) -> None:
    x0, y0 = 664430.0, 3997700.0
    w = LogWriter(tmp_path, LOG, "us-nv-las-vegas-strip", _rig(), "veh-35", T0, box_range_m=30.0)
    for i in range(10):
        dx = 50.0 if 3 <= i < 6 else 20.0  # out of the 30 m range for sweeps 3, 4, 5
        car = ActorState(track_id=7, category="vehicle", x=x0 + dx, y=y0, z=0.8, yaw=3.3 + 4 * np.pi, length=4.5,
                         width=1.9, height=1.6)
        snap = WorldSnapshot(timestamp_us=T0 + 50_000 * i, ego=EgoKinematics(x=x0, y=y0, yaw=0.0), actors=(car,))
        w.add_sweep(snap, np.zeros((1, 6), np.float32), None, scene_index=i // 2)
    con = sqlite3.connect(w.close())
    rows = con.execute("SELECT b.prev_token IS NULL, b.next_token IS NULL, b.x, b.yaw FROM lidar_box b JOIN "
                       "lidar_pc p ON p.token = b.lidar_pc_token ORDER BY p.timestamp").fetchall()
    assert len(rows) == 7 and {r[2] for r in rows} == {x0 + 20.0}
    assert [(r[0], r[1]) for r in rows] == [(1, 0), (0, 0), (0, 1), (1, 0), (0, 0), (0, 0), (0, 1)]  # two chains
    assert all(r[3] == pytest.approx(3.3 - 2 * np.pi) for r in rows)


def test_poses_and_images_on_their_own_clocks(tmp_path: Path) -> None:
    """`add_ego_pose` / `add_image` / `add_sweep(ego_pose_token=...)`: rows link as given; a sweep that links a pose
    never written is an error at close."""
    w = LogWriter(tmp_path, LOG, "us-nv-las-vegas-strip", _rig(), "veh-35", T0)
    for k in range(10):
        w.add_ego_pose(k, T0 + 1_500 + 10_000 * k, EgoKinematics(x=664430.0 + k, y=3997700.0, yaw=0.2))
    for i in range(2):
        w.add_sweep(_snapshot(i), np.zeros((1, 6), np.float32), None, scene_index=0, ego_pose_token=w.pose_token(5 * i))
    img = np.zeros((H, W, 3), np.uint8)
    w.add_image("CAM_F0", img, T0 + 3_000, w.pose_token(0), 0)
    db = w.close()
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*) FROM ego_pose").fetchone() == (10,)
    linked = con.execute("SELECT e.timestamp FROM lidar_pc l JOIN ego_pose e ON e.token = l.ego_pose_token "
                         "ORDER BY l.timestamp").fetchall()
    assert linked == [(T0 + 1_500,), (T0 + 51_500,)]
    assert con.execute("SELECT i.timestamp, e.timestamp FROM image i JOIN ego_pose e ON e.token = i.ego_pose_token"
                       ).fetchall() == [(T0 + 3_000, T0 + 1_500)]
    w2 = LogWriter(tmp_path / "b", LOG, "us-nv-las-vegas-strip", _rig(), "veh-35", T0)
    w2.add_sweep(_snapshot(0), np.zeros((1, 6), np.float32), None, scene_index=0, ego_pose_token=w2.pose_token(3))
    with pytest.raises(ValueError, match="never written"):
        w2.close()
