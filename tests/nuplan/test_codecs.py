"""Codecs of the nuPlan on-disk format: tokens, calibration pickles, PCD / legacy point clouds, GeoPackage maps."""

from __future__ import annotations

import os
import pickle
import sqlite3

import numpy as np
import pytest
import shapely
from shapely.geometry import LineString, Point, Polygon

from drivepipe.errors import DataError
from drivepipe.mapdata import MapFeature, VectorMap
from drivepipe.nuplan import pickles
from drivepipe.nuplan.gpkg import read_gpkg, write_gpkg
from drivepipe.nuplan.pcd import decode_pcd, encode_pcd, read_point_cloud, write_pcd
from drivepipe.nuplan.tables import SCHEMA_SQL, TABLE_COLUMNS, make_token, token_to_bytes, token_to_hex


# ------------------------------------------------------------------------------------------------------- tables
def test_token_round_trip_and_errors() -> None:
    tok = make_token("log", "a", 3)
    assert len(tok) == 8 and tok == make_token("log", "a", 3) and tok != make_token("log", "a3")
    hex16 = token_to_hex(tok)
    assert len(hex16) == 16 and hex16 == hex16.lower() and token_to_bytes(hex16) == tok
    assert token_to_hex(memoryview(tok)) == hex16
    for bad in ("abc", "zz" * 8, 12):
        with pytest.raises(ValueError):
            token_to_bytes(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        token_to_hex(b"\x00" * 4)


def test_schema_creates_the_12_tables_with_their_columns() -> None:
    con = sqlite3.connect(":memory:")
    con.executescript(SCHEMA_SQL)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == set(TABLE_COLUMNS) and len(tables) == 12
    info = {r[1]: r[2] for r in con.execute("PRAGMA table_info(lidar_box)")}
    assert tuple(info) == TABLE_COLUMNS["lidar_box"]
    assert info["token"] == "BLOB" and info["yaw"] == "FLOAT"


# ------------------------------------------------------------------------------------------------------ pickles
def test_calibration_pickles_round_trip_with_devkit_globals() -> None:
    K = np.array([[1000.0, 0.0, 960.0], [0.0, 1000.0, 540.0], [0.0, 0.0, 1.0]])
    blob = pickles.dumps_translation([1.5, -2, 3])
    assert b"nuplan.database.common.data_types" in blob and b"Translation" in blob and blob[:2] == b"\x80\x05"
    assert pickles.loads_calibration(blob, "t") == [1.5, -2.0, 3.0]
    assert pickles.loads_calibration(pickles.dumps_rotation([1, 0, 0, 0]), "r") == [1.0, 0.0, 0.0, 0.0]
    assert np.allclose(pickles.loads_calibration(pickles.dumps_intrinsic(K), "k"), K)
    d = pickles.loads_calibration(pickles.dumps_distortion([0.1, 0.2, 0.0, 0.0, 0.3]), "d")
    assert d == [0.1, 0.2, 0.0, 0.0, 0.3] and all(type(v) is float for v in d)
    with pytest.raises(ValueError):
        pickles.dumps_rotation([1, 0, 0])


def test_real_style_pickle_with_numpy_scalars_numpy1_and_numpy2_names() -> None:
    blob2 = pickle.dumps([np.float64(0.5), np.float64(-0.25)], protocol=5)  # what real rows hold, NumPy-2 names
    assert blob2.count(b"numpy._core.multiarray") == 1
    blob1 = blob2.replace(b"\x8c\x16numpy._core.multiarray", b"\x8c\x15numpy.core.multiarray")
    # the FRAME length covers one byte less after the rename; fix it so the pickle stays valid
    blob1 = blob1[:3] + (int.from_bytes(blob2[3:11], "little") - 1).to_bytes(8, "little") + blob1[11:]
    for blob in (blob1, blob2):
        assert pickles.loads_calibration(blob, "x") == [0.5, -0.25]


@pytest.mark.parametrize("payload", [os.system, pickle.Pickler, sqlite3.connect])
def test_restricted_unpickler_refuses_other_globals(payload: object) -> None:
    blob = pickle.dumps(payload, protocol=5)
    with pytest.raises(DataError, match="forbidden class"):
        pickles.loads_calibration(blob, "db:camera.translation")


def test_restricted_unpickler_refuses_reduce_to_os_system() -> None:
    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, ("echo pwned",))

    with pytest.raises(DataError, match="forbidden class .*system"):
        pickles.loads_calibration(pickle.dumps(Evil(), protocol=5), "src")


def test_truncated_or_garbage_calibration_gives_data_error() -> None:
    good = pickles.dumps_translation([1, 2, 3])
    for bad in (good[:-4], b"not a pickle", b""):
        with pytest.raises(DataError, match="truncated or corrupt"):
            pickles.loads_calibration(bad, "src")
    with pytest.raises(DataError, match="expected a list"):
        pickles.loads_calibration(pickle.dumps(1.0), "src")
    with pytest.raises(DataError, match="unexpected str"):
        pickles.loads_calibration(pickle.dumps(["a"]), "src")


# ---------------------------------------------------------------------------------------------------------- pcd
def _points(n: int = 50) -> np.ndarray:
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(n, 6)).astype(np.float32)
    pts[:, 3:] = rng.integers(0, 40, size=(n, 3))
    return pts


def test_pcd_round_trip_and_header(tmp_path) -> None:
    pts = _points()
    data = encode_pcd(pts)
    head = data[:data.index(b"DATA binary\n") + 12].decode()
    assert "VIEWPOINT 0 0 0 1 0 0 0\n" in head and "FIELDS x y z intensity ring lidar_info" in head
    assert "POINTS 50\n" in head and "COUNT 1 1 1 1 1 1" in head
    np.testing.assert_array_equal(decode_pcd(data, "x"), pts)
    write_pcd(tmp_path / "a.pcd", pts)
    out = read_point_cloud(tmp_path / "a.pcd")
    assert out.dtype == np.float32 and out.shape == (50, 6)
    np.testing.assert_array_equal(out, pts)
    assert decode_pcd(encode_pcd(np.zeros((0, 6), np.float32)), "x").shape == (0, 6)


def test_pcd_with_other_field_order_and_types() -> None:
    rec = np.zeros(3, dtype=[("time_delta", "<f8"), ("lidar_info", "u1"), ("x", "<f4"), ("y", "<f4"),
                             ("z", "<f4"), ("intensity", "u1"), ("ring", "<i2")])
    rec["x"], rec["ring"], rec["lidar_info"], rec["intensity"] = [1, 2, 3], [7, 8, 9], [4, 3, 2], [255, 0, 9]
    head = ("# comment\nVERSION .7\nFIELDS time_delta lidar_info x y z intensity ring\nSIZE 8 1 4 4 4 1 2\n"
            "TYPE F U F F F U I\nCOUNT 1 1 1 1 1 1 1\nWIDTH 3\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 3\n"
            "DATA binary\n")
    out = decode_pcd(head.encode() + rec.tobytes() + b"trailing", "x")
    np.testing.assert_array_equal(out[:, 0], [1, 2, 3])
    np.testing.assert_array_equal(out[:, 3:], [[255, 7, 4], [0, 8, 3], [9, 9, 2]])


@pytest.mark.parametrize("mutate, message", [
    (lambda h: h.replace("VIEWPOINT 0 0 0 1 0 0 0\n", ""), "lacks required key.*VIEWPOINT"),
    (lambda h: h.replace("COUNT 1 1 1 1 1 1", "COUNT 1 1 1 1 1 2"), "COUNT must be all 1"),
    (lambda h: h.replace("DATA binary", "DATA ascii"), "DATA must be 'binary'"),
    (lambda h: h.replace("DATA binary", "DATA binary_compressed"), "DATA must be 'binary'"),
    (lambda h: h.replace("SIZE 4 4 4 4 4 4", "SIZE 4 4 4 4 4"), "lengths differ"),
    (lambda h: h.replace("ring", "rng"), "lack ring"),
    (lambda h: h.replace("TYPE F F F F F F", "TYPE F F F F F Q"), "unsupported TYPE"),
    (lambda h: h.replace("VIEWPOINT 0 0 0 1 0 0 0", "VIEWPOINT 0 0 0 1.0 0 0 0"), "not integers"),
    (lambda h: h.replace("POINTS 50", "POINTS 51"), "truncated"),
    (lambda h: h.replace("DATA binary\n", ""), "DATA line|not ASCII"),
])
def test_malformed_pcd_headers_raise_data_error(mutate, message) -> None:
    data = encode_pcd(_points())
    split = data.index(b"DATA binary\n") + 12
    bad = mutate(data[:split].decode()).encode() + data[split:]
    with pytest.raises(DataError, match=message) as err:
        decode_pcd(bad, "log/MergedPointCloud/x.pcd")
    assert err.value.source == "log/MergedPointCloud/x.pcd"


def test_pcd_truncated_body_and_garbage(tmp_path) -> None:
    data = encode_pcd(_points())
    with pytest.raises(DataError, match="truncated"):
        decode_pcd(data[:-1], "x")
    (tmp_path / "g.pcd").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe garbage\n" * 3)
    with pytest.raises(DataError, match=r"g\.pcd: .*ASCII"):
        read_point_cloud(tmp_path / "g.pcd")


def test_legacy_bin_and_bin2(tmp_path) -> None:
    pts = _points(7)
    (tmp_path / "a.bin2").write_bytes(pts.tobytes())
    (tmp_path / "a.bin").write_bytes(np.ascontiguousarray(pts[:, :5]).tobytes())
    np.testing.assert_array_equal(read_point_cloud(tmp_path / "a.bin2"), pts)
    legacy = read_point_cloud(tmp_path / "a.bin")
    np.testing.assert_array_equal(legacy[:, :5], pts[:, :5])
    assert (legacy[:, 5] == 0).all()
    (tmp_path / "b.bin2").write_bytes(pts.tobytes()[:-4])
    with pytest.raises(DataError, match="not a multiple"):
        read_point_cloud(tmp_path / "b.bin2")
    with pytest.raises(DataError, match="unknown point-cloud extension"):
        read_point_cloud(tmp_path / "a.ply")
    with pytest.raises(DataError, match="cannot read"):
        read_point_cloud(tmp_path / "missing.pcd")


# --------------------------------------------------------------------------------------------------------- gpkg
def _vmap() -> VectorMap:
    x0, y0 = 664430.25, 3997700.5  # Las Vegas, EPSG:32611
    lanes = [MapFeature(10 + i, Polygon([(x0 + 4 * i, y0), (x0 + 4 * i + 3.5, y0), (x0 + 4 * i + 3.5, y0 + 50),
                                          (x0 + 4 * i, y0 + 50)]),
                        {"lane_fid": i, "lane_group_fid": 3, "speed_limit_mps": 13.41, "name": f"l{i}",
                         "stops": i == 1}) for i in range(3)]
    ring = Polygon([(x0, y0), (x0 + 30, y0), (x0 + 30, y0 + 30), (x0, y0 + 30)],
                   [[(x0 + 10, y0 + 10), (x0 + 20, y0 + 10), (x0 + 20, y0 + 20), (x0 + 10, y0 + 20)]])
    return VectorMap("us-nv-las-vegas-strip", "9.15.1915", 32611, {
        "lanes_polygons": lanes,
        "lane_connectors": [MapFeature(7, LineString([(x0, y0), (x0 + 10.123, y0 + 20.987)]),
                                       {"exit_lane_fid": 1, "traffic_light_stop_line_fids": "1,2"})],
        "intersections": [MapFeature(1, ring, {"intersection_type_fid": 1})],
        "traffic_lights": [MapFeature(5, Point(x0 + 1, y0 + 2))],
        "walkways": [],
    })


def test_gpkg_round_trip_within_a_millimetre(tmp_path) -> None:
    vm = _vmap()
    path = tmp_path / "map.gpkg"
    write_gpkg(path, vm)
    back = read_gpkg(path, "us-nv-las-vegas-strip", "9.15.1915")
    assert back.epsg == 32611 and list(back.layers) == list(vm.layers)
    for name, feats in vm.layers.items():
        assert [f.fid for f in back.layers[name]] == [f.fid for f in feats]
        for a, b in zip(feats, back.layers[name]):
            assert a.props == b.props and type(b.props.get("stops", True)) is bool
            assert a.geometry.geom_type == b.geometry.geom_type
            assert shapely.hausdorff_distance(a.geometry, b.geometry) < 1e-3
    con = sqlite3.connect(path)
    assert con.execute("SELECT srs_id FROM gpkg_geometry_columns WHERE table_name = 'lanes_polygons'").fetchone() \
        == (4326,)
    meta = dict(con.execute("SELECT key, value FROM meta"))
    assert meta["projectedCoordSystem"] == "EPSG:32611" and meta["geographicCoordSystem"] == "epsg:4326"
    lon, lat = shapely.from_wkb(con.execute("SELECT geom FROM traffic_lights").fetchone()[0][40:]).coords[0]
    assert -116 < lon < -115 and 36 < lat < 36.2  # really stored in WGS84
    assert read_gpkg(path, "x", "y", layers=["walkways"]).layers == {"walkways": []}


def test_gpkg_utm_storage_big_endian_header_and_determinism(tmp_path) -> None:
    vm = _vmap()
    write_gpkg(tmp_path / "a.gpkg", vm, storage_epsg=32611)
    write_gpkg(tmp_path / "b.gpkg", vm, storage_epsg=32611)
    assert (tmp_path / "a.gpkg").read_bytes() == (tmp_path / "b.gpkg").read_bytes()
    con = sqlite3.connect(tmp_path / "a.gpkg")
    blob = con.execute("SELECT geom FROM lane_connectors").fetchone()[0]
    wkb = blob[40:]  # little-endian header with a 32-byte xy envelope
    big = b"GP\x00\x00" + (32611).to_bytes(4, "big") + wkb  # big-endian header, no envelope
    with con:
        con.execute("UPDATE lane_connectors SET geom = ?", (big,))
    con.close()
    back = read_gpkg(tmp_path / "a.gpkg", "l", "v")
    assert shapely.equals_exact(back.layers["lane_connectors"][0].geometry,
                                vm.layers["lane_connectors"][0].geometry, 1e-9)


def test_gpkg_errors(tmp_path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_gpkg(tmp_path / "none.gpkg", "l", "v")
    (tmp_path / "junk.gpkg").write_bytes(b"this is not sqlite at all" * 10)
    with pytest.raises(DataError, match="not a GeoPackage"):
        read_gpkg(tmp_path / "junk.gpkg", "l", "v")
    write_gpkg(tmp_path / "m.gpkg", _vmap())
    con = sqlite3.connect(tmp_path / "m.gpkg")
    with con:
        con.execute("UPDATE gpkg_spatial_ref_sys SET organization = 'NONE', organization_coordsys_id = 99, "
                    "definition = 'undefined' WHERE srs_id = 4326")
    with pytest.raises(DataError, match="srs_id 4326 .* not a known EPSG"):
        read_gpkg(tmp_path / "m.gpkg", "l", "v")
    with con:
        con.execute("DROP TABLE meta")
    con.close()
    with pytest.raises(DataError, match="no readable 'meta'"):
        read_gpkg(tmp_path / "m.gpkg", "l", "v")
