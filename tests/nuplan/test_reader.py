"""The devkit-free nuPlan reader: layout discovery, log tables, scenarios, bundles and every bad-input case."""

from __future__ import annotations

import pickle
import sqlite3
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from drivepipe.errors import DataError
from drivepipe.nuplan.bundle import load_bundle
from drivepipe.nuplan.db import MissingBlobError, NuplanLog
from drivepipe.nuplan.layout import discover
from drivepipe.nuplan.maps import MapsRoot
from drivepipe.nuplan.scenarios import enumerate_scenarios
from drivepipe.nuplan.tables import make_token
from drivepipe.schema import CATEGORY_INDEX


import reader_data as _D  # noqa: E402  (tests/nuplan is on sys.path under pytest)

CHANNELS = _D.CHANNELS
CONE_ID = _D.CONE_ID
DT_US = _D.DT_US
EGO_SPEED = _D.EGO_SPEED
EGO_YAW = _D.EGO_YAW
IMG_H = _D.IMG_H
IMG_W = _D.IMG_W
LOCATION = _D.LOCATION
LOG_NAME = _D.LOG_NAME
NUM_SCENES = _D.NUM_SCENES
PED_ID = _D.PED_ID
SWEEPS_PER_SCENE = _D.SWEEPS_PER_SCENE
T0_US = _D.T0_US
T_EGO_FROM_LIDAR = _D.T_EGO_FROM_LIDAR
VEHICLE_ID = _D.VEHICLE_ID
Dataset = _D.Dataset
ego_at = _D.ego_at
vehicle_at = _D.vehicle_at


def open_log(ds: Dataset, policy: str = "fail") -> NuplanLog:
    return NuplanLog(ds.db, ds.blobs, MapsRoot(ds.maps), missing_blob_policy=policy)


def bundle_at(log: NuplanLog, i: int, **kw):
    args = dict(channels=CHANNELS, history_steps=3, future_steps=4, dt_s=0.1, map_radius_m=30.0)
    args.update(kw)
    return load_bundle(log, str(log.lidar_pcs.token[i]), **args)


def sql(db: Path, statement: str, params: tuple = ()) -> None:
    con = sqlite3.connect(db)
    con.execute(statement, params)
    con.commit()
    con.close()


def to_ego(x: float, y: float, i: int) -> np.ndarray:
    """Global (x, y) -> ego frame of sweep i, written out independently of the reader's helpers."""
    e = ego_at(i)
    dx, dy = x - e.x, y - e.y
    c, s = np.cos(e.yaw), np.sin(e.yaw)
    return np.array([c * dx + s * dy, -s * dx + c * dy])


# ------------------------------------------------------------------------------------------------- layout
def _move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    src.rename(dst)


def test_discover_documented_layout(dataset: Dataset) -> None:
    lay = discover(dataset.root)
    assert lay.db_files == [dataset.db]
    assert lay.sensor_root == dataset.blobs and lay.maps_root == dataset.maps


def test_discover_archive_layout_and_searched_sensor_root(dataset_copy: Dataset) -> None:
    root = dataset_copy.root
    _move(root / "nuplan-v1.1" / "splits" / "mini", root / "data" / "cache" / "mini")
    _move(root / "nuplan-v1.1" / "sensor_blobs", root / "nuplan-v1.1_mini_camera_0" / "nuplan-v1.1_mini_camera_0")
    lay = discover(root)
    assert lay.db_files == [root / "data" / "cache" / "mini" / f"{LOG_NAME}.db"]
    assert lay.sensor_root == root / "nuplan-v1.1_mini_camera_0" / "nuplan-v1.1_mini_camera_0"


def test_discover_legacy_layout(dataset_copy: Dataset) -> None:
    root = dataset_copy.root
    _move(root / "nuplan-v1.1" / "splits" / "mini", root / "nuplan-v1.1" / "mini")
    assert discover(root).db_files == [root / "nuplan-v1.1" / "mini" / f"{LOG_NAME}.db"]


def test_discover_env_vars_and_explicit_root_wins(dataset: Dataset, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    other_maps = tmp_path / "elsewhere"
    monkeypatch.setenv("NUPLAN_DATA_ROOT", str(dataset.root))
    monkeypatch.setenv("NUPLAN_MAPS_ROOT", str(other_maps))
    lay = discover()
    assert lay.db_files == [dataset.db] and lay.maps_root == other_maps
    monkeypatch.setenv("NUPLAN_DATA_ROOT", str(tmp_path))  # empty: only the explicit root has data
    assert discover(dataset.root).maps_root == dataset.maps


def test_discover_nothing_names_searched_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match="splits/mini.*data/cache/mini"):
        discover(tmp_path)
    monkeypatch.delenv("NUPLAN_DATA_ROOT", raising=False)
    with pytest.raises(DataError, match="NUPLAN_DATA_ROOT"):
        discover()


# ------------------------------------------------------------------------------------------------- tables
def test_log_metadata_and_calibration(dataset: Dataset) -> None:
    from drivepipe.world.rig import default_rig

    with open_log(dataset) as log:
        assert (log.log_name, log.location, log.vehicle_name) == (LOG_NAME, LOCATION, "veh-35")
        rig = default_rig(IMG_W, IMG_H)
        assert sorted(log.cameras) == sorted(CHANNELS)
        for ch in CHANNELS:
            cal = log.cameras[ch]
            assert (cal.width, cal.height) == (IMG_W, IMG_H)
            np.testing.assert_allclose(cal.intrinsic, rig.cameras[ch].intrinsic)
            np.testing.assert_allclose(cal.T_ego_from_cam, rig.cameras[ch].T_ego_from_cam, atol=1e-9)
        np.testing.assert_allclose(log.T_ego_from_lidar, T_EGO_FROM_LIDAR, atol=1e-12)


def test_tokens_timestamps_and_poses(dataset: Dataset) -> None:
    with open_log(dataset) as log:
        pcs = log.lidar_pcs
        n = NUM_SCENES * SWEEPS_PER_SCENE
        assert len(pcs) == n
        assert list(pcs.token) == [make_token(LOG_NAME, "lidar_pc", i).hex() for i in range(n)]
        np.testing.assert_array_equal(pcs.timestamp_us, T0_US + DT_US * np.arange(n))
        assert pcs.filename[3] == f"{LOG_NAME}/MergedPointCloud/{pcs.token[3]}.pcd"
        np.testing.assert_allclose(pcs.xyz[5, :2], [ego_at(5).x, ego_at(5).y])
        np.testing.assert_allclose(pcs.velocity[5], [EGO_SPEED, 0, 0])
        assert log.duration_s == pytest.approx((n - 1) * DT_US / 1e6)


def test_boxes_loaded_once_grouped_by_sweep(dataset: Dataset) -> None:
    with open_log(dataset) as log:
        table = log.boxes
        assert log.boxes is table
        assert table.offsets[-1] == 2 * NUM_SCENES * SWEEPS_PER_SCENE + 10  # the cone exists in sweeps 0-9
        assert sorted(table.track_id[table.rows(0)].tolist()) == sorted([VEHICLE_ID, PED_ID, CONE_ID])
        assert sorted(table.track_id[table.rows(12)].tolist()) == sorted([VEHICLE_ID, PED_ID])


def test_boxes_with_unknown_sweep_or_track_are_skipped_and_counted(dataset_copy: Dataset) -> None:
    """Rows pointing at no lidar_pc / no track are dropped and counted; a token of an odd length (not the documented
    8 bytes) takes the per-row path and gives the same table."""
    with open_log(dataset_copy) as log:
        before = log.boxes
        want = {k: getattr(before, k).copy() for k in ("offsets", "center", "category", "track_id")}
    sql(dataset_copy.db, "UPDATE lidar_box SET lidar_pc_token = ? WHERE rowid = 1", (b"\x00" * 8,))
    sql(dataset_copy.db, "UPDATE lidar_box SET track_token = ? WHERE rowid = 2", (b"\x01" * 8,))
    sql(dataset_copy.db, "INSERT INTO lidar_box SELECT ?, ?, track_token, next_token, prev_token, x, y, z, width, "
                         "length, height, vx, vy, vz, yaw, confidence FROM lidar_box WHERE rowid = 3",
        (b"\x02" * 8, b"\x03" * 5))  # a 5-byte lidar_pc token: unknown sweep, and the slow path
    with open_log(dataset_copy) as log:
        table = log.boxes
        assert log.skipped["lidar_box with unknown lidar_pc or track"] == 3
        assert len(table.category) == len(want["category"]) - 2 and table.offsets[-1] == len(table.category)
        assert set(table.track_id.tolist()) <= set(want["track_id"].tolist())
        for i in range(len(table.offsets) - 1):  # every kept box still sits with its own sweep
            assert set(map(tuple, table.center[table.rows(i)].round(6))) <= set(
                map(tuple, want["center"][want["offsets"][i]:want["offsets"][i + 1]].round(6)))


# ------------------------------------------------------------------------------------------------- scenarios
def test_valid_scene_rule_and_scenario_types(dataset: Dataset) -> None:
    with open_log(dataset) as log:
        scenarios = enumerate_scenarios(log)
        kept_scenes = {s.token for s in log.scenes[2:5]}
        assert [s.name for s in log.scenes] == [f"scene-{k:04d}" for k in range(NUM_SCENES)]
        assert len(scenarios) == 3 * SWEEPS_PER_SCENE
        assert {s.scene_token for s in scenarios} == kept_scenes
        assert [s.index for s in scenarios] == list(range(2 * SWEEPS_PER_SCENE, 5 * SWEEPS_PER_SCENE))
        types = {s.index: s.scenario_type for s in scenarios}
        assert types[10] == "following_lane_with_lead"  # MAX of the two tags of sweep 10
        assert types[13] == "stationary" and types[11] == "unknown"


# ------------------------------------------------------------------------------------------------- bundle
def test_bundle_frames(dataset: Dataset) -> None:
    i = 12
    with open_log(dataset) as log:
        b = bundle_at(log, i)
    b.validate()
    assert b.meta.timestamp_us == T0_US + i * DT_US and b.meta.location == LOCATION
    np.testing.assert_allclose(b.ego.T_global_from_ego[:2, 3], [ego_at(i).x, ego_at(i).y])
    assert b.ego.heading_rad == pytest.approx(EGO_YAW)
    # the lidar point (1, 0, 0) lands at the extrinsic's translation + its 90-degree rotation of x
    np.testing.assert_allclose(b.lidar.points[0], [1.3, 1.0, 1.9, 100.0, 5.0, 2.0], atol=1e-5)
    boxes = b.annotations.boxes
    k = int(np.flatnonzero(boxes.track_id == VEHICLE_ID)[0])
    v = vehicle_at(i)
    np.testing.assert_allclose(boxes.center[k], [*to_ego(v.x, v.y, i), 0.8], atol=1e-6)
    assert boxes.yaw[k] == pytest.approx(np.pi / 2 - EGO_YAW)
    np.testing.assert_allclose(boxes.velocity[k], [3 * np.sin(EGO_YAW), 3 * np.cos(EGO_YAW)], atol=1e-9)
    np.testing.assert_allclose(boxes.size[k], [4.5, 2.0, 1.6])
    assert boxes.category[k] == CATEGORY_INDEX["vehicle"]


def test_track_id_round_trip(dataset: Dataset) -> None:
    with open_log(dataset) as log:
        b = bundle_at(log, 4)
    assert set(b.annotations.boxes.track_id.tolist()) == {VEHICLE_ID, PED_ID, CONE_ID}


def test_cameras_decoded_rgb(dataset: Dataset) -> None:
    with open_log(dataset) as log:
        b = bundle_at(log, 12)
    img = b.cameras["CAM_F0"].image
    assert img.shape == (IMG_H, IMG_W, 3) and img.dtype == np.uint8
    assert img[-1, :, 0].mean() > 150 and img[-1, :, 2].mean() < 90  # red stays in channel 0
    assert b.cameras["CAM_F0"].timestamp_us == T0_US + 12 * DT_US


def test_cameras_decoded_at_the_wanted_reduction(dataset: Dataset) -> None:
    with open_log(dataset) as log:
        full = bundle_at(log, 12)
        half = bundle_at(log, 12, image_min_size=(IMG_W // 2, IMG_H // 2))
        none = bundle_at(log, 12, image_min_size=(IMG_W, IMG_H))
    f, h = full.cameras["CAM_F0"], half.cameras["CAM_F0"]
    assert (f.downscale, h.downscale, none.cameras["CAM_F0"].downscale) == (1, 2, 1)
    assert h.image.shape == (IMG_H // 2, IMG_W // 2, 3) and h.calibration is f.calibration
    box_mean = f.image.reshape(IMG_H // 2, 2, IMG_W // 2, 2, 3).mean(axis=(1, 3))
    assert np.abs(h.image - box_mean).mean() < 3.0  # the same picture, at half size
    assert h.image[-1, :, 0].mean() > 150 and h.image[-1, :, 2].mean() < 90  # still RGB


def test_image_matching_window(dataset_copy: Dataset) -> None:
    ts = T0_US + 12 * DT_US  # sweep 12 has an image; sweeps 11 and 13 are 50 ms from it
    sql(dataset_copy.db, "UPDATE image SET timestamp = timestamp + 60000 WHERE timestamp = ? AND camera_token = "
                         "(SELECT token FROM camera WHERE channel = 'CAM_L0')", (ts,))
    sql(dataset_copy.db, "UPDATE image SET timestamp = timestamp + 40000 WHERE timestamp = ? AND camera_token = "
                         "(SELECT token FROM camera WHERE channel = 'CAM_F0')", (ts,))
    with open_log(dataset_copy) as log:
        assert log.match_image("CAM_F0", ts) is not None
        assert log.match_image("CAM_L0", ts) is None  # 60 ms away, neighbours 140 / 160 ms away
        assert log.match_image("CAM_F0", ts + DT_US) is not None  # 10 ms from the moved image
        assert log.match_image("CAM_L0", ts + DT_US) is not None  # 10 ms
        assert log.match_image("CAM_F0", ts - DT_US) is not None  # 50 ms: edge of the window, included


def test_history_future_and_agents(dataset: Dataset) -> None:
    with open_log(dataset) as log:
        first, last = bundle_at(log, 2), bundle_at(log, len(log.lidar_pcs) - 2)
        mid = bundle_at(log, 12)
    np.testing.assert_array_equal(first.ego.history_valid, [False, False, True, True])
    np.testing.assert_array_equal(last.annotations.ego_future_valid, [False] * 4)  # next sweep is only 0.05 s on
    np.testing.assert_allclose(mid.ego.history[:, 0], [-1.5, -1.0, -0.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(mid.annotations.ego_future[:, 0], [0.5, 1.0, 1.5, 2.0], atol=1e-6)
    agents = mid.annotations.agents
    cats = mid.annotations.boxes.category[agents.box_index]
    assert CATEGORY_INDEX["traffic_cone"] not in cats.tolist() and len(agents) == 2
    a = int(np.flatnonzero(mid.annotations.boxes.track_id[agents.box_index] == VEHICLE_ID)[0])
    v = vehicle_at(12 + 2 * 2)  # 2nd future step = 0.2 s = 4 sweeps
    np.testing.assert_allclose(agents.future[a, 1, :2], to_ego(v.x, v.y, 12), atol=1e-6)
    assert agents.future[a, 1, 2] == pytest.approx(np.pi / 2 - EGO_YAW)
    v = vehicle_at(12 - 2 * 3)
    np.testing.assert_allclose(agents.history[a, 0, :2], to_ego(v.x, v.y, 12), atol=1e-6)
    assert agents.history_valid.all() and agents.future_valid.all()


def test_agent_masks_at_log_end(dataset: Dataset) -> None:
    with open_log(dataset) as log:
        b = bundle_at(log, len(log.lidar_pcs) - 3)  # 2 sweeps (0.1 s) left
    np.testing.assert_array_equal(b.annotations.ego_future_valid, [True, False, False, False])
    np.testing.assert_array_equal(b.annotations.agents.future_valid[0], [True, False, False, False])


def test_route_follows_roadblocks_not_the_branch(dataset: Dataset) -> None:
    with open_log(dataset) as log:
        route = bundle_at(log, 8).annotations.route
        maps_layers = bundle_at(log, 8).annotations.map_layers
    np.testing.assert_allclose(route[0], [0.0, 0.0], atol=1e-3)  # the ego drives on lane 1's centreline
    straight = route[route[:, 0] < 50]
    assert np.abs(straight[:, 1]).max() < 1e-3
    assert route[-1, 1] > 10.0  # ends on lane 2, turned left (the branch turns right)
    assert len(maps_layers["centerline"]) >= 1 and len(maps_layers["drivable_area"]) == 1


# ------------------------------------------------------------------------------------------------- bad inputs
def test_corrupt_and_truncated_db(dataset_copy: Dataset) -> None:
    data = dataset_copy.db.read_bytes()
    dataset_copy.db.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated") as exc:
        open_log(dataset_copy)
    assert exc.value.source == str(dataset_copy.db)
    dataset_copy.db.write_bytes(b"this is not sqlite at all" * 10)
    with pytest.raises(DataError, match="not a SQLite database") as exc:
        open_log(dataset_copy)
    assert exc.value.source == str(dataset_copy.db)


def test_missing_table_and_column(dataset_copy: Dataset) -> None:
    sql(dataset_copy.db, "DROP TABLE scenario_tag")
    with pytest.raises(DataError, match="missing table 'scenario_tag'") as exc:
        open_log(dataset_copy)
    assert exc.value.source == str(dataset_copy.db)
    sql(dataset_copy.db, "CREATE TABLE scenario_tag (token BLOB, type TEXT)")
    with pytest.raises(DataError, match=r"'scenario_tag' is missing column\(s\) \['lidar_pc_token'\]"):
        open_log(dataset_copy)


def test_db_is_never_written(dataset: Dataset) -> None:
    before = dataset.db.stat().st_mtime_ns, dataset.db.read_bytes()
    with open_log(dataset) as log:
        bundle_at(log, 12)
    assert (dataset.db.stat().st_mtime_ns, dataset.db.read_bytes()) == before


def test_missing_blob_fail_vs_skip(dataset_copy: Dataset) -> None:
    with open_log(dataset_copy) as log:
        pcd = log.blob_path(str(log.lidar_pcs.filename[12]))
        jpg = log.blob_path(str(log.images["CAM_L0"].filename[7]))  # image of sweep 14
    pcd.unlink()
    jpg.unlink()
    with open_log(dataset_copy, "fail") as log:
        with pytest.raises(MissingBlobError, match="missing blob referenced by lidar_pc.filename") as exc:
            bundle_at(log, 12)
        assert exc.value.source == str(pcd)
        with pytest.raises(MissingBlobError, match="image.filename_jpg"):
            load_bundle(log, str(log.lidar_pcs.token[14]), ["CAM_L0"], 1, 1, 0.1, 10.0, with_annotations=False)
    with open_log(dataset_copy, "skip") as log:
        scenarios = enumerate_scenarios(log)
        assert 12 not in {s.index for s in scenarios} and len(scenarios) == 3 * SWEEPS_PER_SCENE - 1
        b = bundle_at(log, 14)
        assert list(b.cameras) == ["CAM_F0"]
        assert log.skipped["missing blob (lidar_pc.filename)"] == 1
        assert log.skipped["missing blob (image.filename_jpg)"] == 1


def test_truncated_and_malformed_blobs(dataset_copy: Dataset) -> None:
    with open_log(dataset_copy) as log:
        pcd = log.blob_path(str(log.lidar_pcs.filename[12]))
        pcd2 = log.blob_path(str(log.lidar_pcs.filename[16]))
        jpg = log.blob_path(str(log.images["CAM_F0"].filename[7]))  # sweep 14
    pcd.write_bytes(pcd.read_bytes()[:-100])
    pcd2.write_bytes(pcd2.read_bytes().replace(b"DATA binary", b"DATA ascii!"))
    jpg.write_bytes(jpg.read_bytes()[:200])
    with open_log(dataset_copy) as log:
        with pytest.raises(DataError, match="truncated") as exc:
            bundle_at(log, 12)
        assert exc.value.source == str(pcd)
        with pytest.raises(DataError, match="DATA must be 'binary'") as exc:
            bundle_at(log, 16)
        assert exc.value.source == str(pcd2)
        with pytest.raises(DataError, match="JPEG") as exc:
            bundle_at(log, 14)
        assert exc.value.source == str(jpg)


class _Evil:
    pass


def test_calibration_of_unknown_class(dataset_copy: Dataset) -> None:
    blob = pickle.dumps(OrderedDict(a=1), protocol=5)
    sql(dataset_copy.db, "UPDATE camera SET intrinsic = ? WHERE channel = 'CAM_L0'", (blob,))
    with pytest.raises(DataError, match="forbidden class collections.OrderedDict") as exc:
        open_log(dataset_copy)
    assert str(dataset_copy.db) in exc.value.source and "CAM_L0" in exc.value.source


def test_insane_calibration(dataset_copy: Dataset) -> None:
    from drivepipe.nuplan.pickles import dumps_rotation

    sql(dataset_copy.db, "UPDATE camera SET rotation = ? WHERE channel = 'CAM_F0'", (dumps_rotation([1, 1, 0, 0]),))
    with pytest.raises(DataError, match="not a unit quaternion"):
        open_log(dataset_copy)


def test_unknown_category_name(dataset_copy: Dataset) -> None:
    sql(dataset_copy.db, "UPDATE category SET name = 'hovercraft' WHERE name = 'barrier'")
    with pytest.raises(DataError, match="unknown category name 'hovercraft'") as exc:
        open_log(dataset_copy)
    assert exc.value.source == str(dataset_copy.db)


def test_missing_map_location_and_gpkg(dataset_copy: Dataset) -> None:
    sql(dataset_copy.db, "UPDATE log SET map_version = 'xx-atlantis.gpkg'")
    with open_log(dataset_copy) as log:
        assert log.location == "xx-atlantis"
        with pytest.raises(DataError, match="'xx-atlantis' is not listed") as exc:
            bundle_at(log, 12)
        assert exc.value.source == str(dataset_copy.maps / "nuplan-maps-v1.0.json")
        bundle_at(log, 12, with_annotations=False)  # inputs need no map
    gpkg = MapsRoot(dataset_copy.maps).gpkg_path(LOCATION)
    gpkg.unlink()
    with pytest.raises(DataError, match="not found") as exc:
        MapsRoot(dataset_copy.maps).load(LOCATION)
    assert exc.value.source == str(gpkg)
    (dataset_copy.maps / "nuplan-maps-v1.0.json").unlink()
    with pytest.raises(DataError, match="maps index not found"):
        MapsRoot(dataset_copy.maps)


def test_unknown_token(dataset: Dataset) -> None:
    with open_log(dataset) as log:
        with pytest.raises(DataError, match="not in this log"):
            load_bundle(log, "0123456789abcdef", CHANNELS, 1, 1, 0.1, 10.0)


def test_image_rows_table_equals_match_image(dataset: Dataset) -> None:
    with open_log(dataset) as log:
        for channel in CHANNELS:
            rows = log.image_rows(channel)
            for i, t in enumerate(log.lidar_pcs.timestamp_us):
                j = log.match_image(channel, int(t))
                assert rows[i] == (-1 if j is None else j)
            assert (rows >= 0).any() and log.image_rows(channel) is rows  # computed once


def test_include_cameras_on_the_old_layout_and_by_time_when_poses_are_not_shared(dataset_copy: Dataset) -> None:
    """Old layout (images on every second sweep, same timestamp and pose): include_cameras keeps those sweeps, and
    the ±50 ms tie of the odd sweeps goes to the earlier image. Images that link no sweep's pose (a foreign writer)
    fall back to the sweep nearest each image."""
    with open_log(dataset_copy) as log:
        cams = [s.index for s in enumerate_scenarios(log, include_cameras=True)]
        every = [s.index for s in enumerate_scenarios(log)]
        assert cams == [i for i in every if i % 2 == 0] and len(cams) < len(every)
        odd = np.flatnonzero(np.arange(len(log.lidar_pcs)) % 2 == 1)[:-1]
        rows = log.image_rows("CAM_F0")
        np.testing.assert_array_equal(log.images["CAM_F0"].timestamp_us[rows[odd]], log.lidar_pcs.timestamp_us[odd - 1])
    con = sqlite3.connect(dataset_copy.db)
    con.execute("UPDATE image SET ego_pose_token = ?", (bytes(8),))
    con.commit()
    con.close()
    with open_log(dataset_copy) as log:
        assert [s.index for s in enumerate_scenarios(log, include_cameras=True)] == cams


def test_preprocess_anchors_on_the_old_layout_are_the_camera_sweeps(dataset: Dataset) -> None:
    import yaml

    from drivepipe.config import from_dict
    from drivepipe.preprocess.run import plan_tasks

    params = yaml.safe_load((Path(__file__).parents[1] / "pipeline" / "tiny_params.yaml").read_text())
    params["preprocess"].update(cameras=list(CHANNELS), history_steps=1, future_steps=1, traj_dt_s=0.1,
                                window_stride=1)
    tasks, _, _ = plan_tasks(from_dict(params), dataset.root)
    anchors = [w.token for t in tasks for w in t.windows]
    with open_log(dataset) as log:
        rows = [log.token_index[a] for a in anchors]
        assert rows and all(i % 2 == 0 for i in rows)
        assert set(bundle_at(log, rows[0]).cameras) == set(CHANNELS)
