"""nuPlan-format writer for the synthetic world: one log `.db` plus its sensor blobs, and the maps tree.

Layout (the nuplan-devkit's documented tree): `<data_root>/nuplan-v1.1/splits/mini/<log>.db`,
`<data_root>/nuplan-v1.1/sensor_blobs/<log>/CAM_*/<16hex>.jpg` and `.../MergedPointCloud/<16hex>.pcd`,
`<maps_root>/nuplan-maps-v1.0.json` and `<maps_root>/<location>/<version>/map.gpkg`.

Every token is derived from names and indices (`make_token`), except track tokens, which are the world's integer
track id as 8 big-endian bytes so that a reader's `int.from_bytes(token, "big")` recovers it. Rows whose
`next_token` is not yet known are held back one step instead of being updated later, and the DB is written in
one transaction under a temporary name, so the same inputs always give byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from drivepipe.config import CAMERA_CHANNELS
from drivepipe.nuplan import pickles
from drivepipe.nuplan.pcd import encode_pcd
from drivepipe.nuplan.tables import INDEX_SQL, SCHEMA_SQL, TABLE_COLUMNS, make_token, token_to_hex
from drivepipe.schema import CATEGORIES
from drivepipe.utils.geometry import matrix_to_quat, yaw_to_quat
from drivepipe.world.timeline import wrap_yaw
from drivepipe.world_state import ActorState, EgoKinematics, WorldSnapshot

# Per map location: (log.location, UTM EPSG, map version folder), as in the released nuPlan maps.
LOCATION_INFO: dict[str, tuple[str, int, str]] = {
    "us-nv-las-vegas-strip": ("las_vegas", 32611, "9.15.1915"),
    "us-ma-boston": ("boston", 32619, "9.12.1817"),
    "us-pa-pittsburgh-hazelwood": ("pittsburgh", 32617, "9.17.1937"),
    "sg-one-north": ("singapore", 32648, "9.17.1964"),
}
LIDAR_CHANNEL = "MergedPointCloud"
_CATEGORY_DESCRIPTIONS = {
    "vehicle": "Cars, trucks and buses", "bicycle": "Bicycles and their riders", "pedestrian": "People on foot",
    "traffic_cone": "Temporary traffic cones", "barrier": "Temporary road barriers",
    "czone_sign": "Construction zone signs", "generic_object": "Other static objects",
}


def track_token(track_id: int) -> bytes:
    """The 8-byte `track.token` of a world track id (big-endian, so `int.from_bytes(token, "big")` inverts it)."""
    try:
        return int(track_id).to_bytes(8, "big")
    except OverflowError:
        raise ValueError(f"track_id {track_id} does not fit an unsigned 64-bit token") from None


def log_paths(data_root: Path, log_name: str) -> tuple[Path, Path]:
    """(db file, sensor-blob folder) of a log in the documented layout."""
    base = Path(data_root) / "nuplan-v1.1"
    return base / "splits" / "mini" / f"{log_name}.db", base / "sensor_blobs" / log_name


def _insert_sql(table: str) -> str:
    cols = TABLE_COLUMNS[table]
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"


def _insert(con: sqlite3.Connection, table: str, row: Sequence[Any]) -> None:
    assert len(row) == len(TABLE_COLUMNS[table]), (table, len(row))
    con.execute(_insert_sql(table), tuple(row))


def _insert_many(con: sqlite3.Connection, table: str, rows: list[Sequence[Any]]) -> None:
    assert all(len(r) == len(TABLE_COLUMNS[table]) for r in rows), table
    con.executemany(_insert_sql(table), [tuple(r) for r in rows])


class LogWriter:
    """Writes one synthetic log; call `add_sweep` once per 20 Hz tick in time order, then `close`.

    Args:
        data_root: dataset root (the folder holding `nuplan-v1.1/`).
        log_name: `<YYYY.MM.DD.HH.MM.SS>_veh-<NN>_<start>_<end>`; the db stem and blob folder name.
        location: map location, one of `LOCATION_INFO` (stored as `log.map_version`).
        rig: object with `.cameras: dict[channel, CameraCalibration]` and `.T_ego_from_lidar (4, 4)`.
        vehicle_name: e.g. "veh-35".
        start_time_us: log start, µs since the Unix epoch (UTC).
        jpeg_quality: JPEG quality of the written camera images.
        box_range_m: write `lidar_box` rows only for objects within this distance (m, x-y) of the ego, like a
            lidar-based auto-labeller; a track that leaves the range and comes back starts a new prev/next chain
            (same track token). None: every actor.

    Ego poses: either one per sweep taken from the snapshot (`add_sweep` without `ego_pose_token`), or written at
    their own rate with `add_ego_pose` and linked by token (`pose_token(k)` is known before the row is written).
    Images: with the sweep (same timestamp and pose, `add_sweep(images=...)`) or at their own timestamps
    (`add_image`).
    """

    def __init__(self, data_root: Path, log_name: str, location: str, rig: Any, vehicle_name: str,
                 start_time_us: int, jpeg_quality: int = 90, box_range_m: float | None = None) -> None:
        if location not in LOCATION_INFO:
            raise ValueError(f"unknown location {location!r}; expected one of {sorted(LOCATION_INFO)}")
        self.log_name, self.location, self.rig = log_name, location, rig
        self.epsg = LOCATION_INFO[location][1]
        self.jpeg_quality = int(jpeg_quality)
        self.box_range_m = None if box_range_m is None else float(box_range_m)
        self.db_path, self.blob_dir = log_paths(Path(data_root), log_name)
        self._tmp_path = self.db_path.with_name(f".{self.db_path.name}.tmp")
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp_path.unlink(missing_ok=True)
        self.log_token = make_token("log", log_name)
        self.lidar_token = make_token(log_name, "lidar", LIDAR_CHANNEL)
        self.camera_tokens = {ch: make_token(log_name, "camera", ch) for ch in CAMERA_CHANNELS if ch in rig.cameras}
        self.category_tokens = {name: make_token("category", name) for name in CATEGORIES}
        self._sweep = 0
        self._pending_pc: list[Any] | None = None
        self._pending_img: dict[str, list[Any]] = {}
        self._pending_box: dict[int, list[Any]] = {}
        self._tracks: set[int] = set()
        self._last_seen: dict[int, int] = {}  # track id -> last sweep index with a box
        self._poses: set[bytes] = set()  # ego_pose tokens written
        self._linked: set[bytes] = set()  # ego_pose tokens referenced by sweeps and images
        self._scene_sweeps: dict[int, list[int]] = {}  # scene index -> sweep indices
        self._sweep_pose: list[bytes] = []
        self.num_images = 0
        self.con = sqlite3.connect(self._tmp_path)
        self.con.execute("PRAGMA journal_mode = MEMORY")
        self.con.execute("PRAGMA synchronous = OFF")
        self.con.executescript(SCHEMA_SQL)
        self._write_static_rows(start_time_us, vehicle_name)

    # ------------------------------------------------------------------------------------------- static rows
    def _write_static_rows(self, start_time_us: int, vehicle_name: str) -> None:
        date = dt.datetime.fromtimestamp(start_time_us / 1e6, tz=dt.timezone.utc).strftime("%Y-%m-%d")
        short = LOCATION_INFO[self.location][0]
        _insert(self.con, "log", (self.log_token, vehicle_name, date, int(start_time_us), self.log_name, short,
                                  self.location))
        for ch, token in self.camera_tokens.items():
            cal = self.rig.cameras[ch]
            T = np.asarray(cal.T_ego_from_cam, dtype=np.float64)
            _insert(self.con, "camera", (
                token, self.log_token, ch, cal.model, pickles.dumps_translation(T[:3, 3]),
                pickles.dumps_rotation(matrix_to_quat(T[:3, :3])), pickles.dumps_intrinsic(cal.intrinsic),
                pickles.dumps_distortion(cal.distortion), int(cal.width), int(cal.height)))
        T = np.asarray(self.rig.T_ego_from_lidar, dtype=np.float64)
        _insert(self.con, "lidar", (self.lidar_token, self.log_token, LIDAR_CHANNEL, "synthetic-merged",
                                    pickles.dumps_translation(T[:3, 3]),
                                    pickles.dumps_rotation(matrix_to_quat(T[:3, :3]))))
        for name, token in self.category_tokens.items():
            _insert(self.con, "category", (token, name, _CATEGORY_DESCRIPTIONS[name]))

    # ----------------------------------------------------------------------------------------------- sweeps
    def add_sweep(self, snapshot: WorldSnapshot, points_lidar_N6: np.ndarray | None,
                  images: dict[str, np.ndarray] | None, scene_index: int,
                  ego_pose_token: bytes | None = None) -> bytes:
        """Write one 20 Hz tick: lidar_pc + its .pcd, boxes, tags, lights, its ego pose and (optionally) images.

        Args:
            snapshot: the world at this tick (timestamps must increase).
            points_lidar_N6: (N, 6) float32 merged cloud in the lidar frame, or None: the row names its .pcd, but
                the file is not written (an unreleased point cloud, as in nuPlan's partial sensor release).
            images: channel -> (H, W, 3) uint8 RGB with H, W equal to the calibration, stamped with the sweep's
                time and pose; or None (no camera tick, or images written with `add_image`).
            scene_index: index of the scene this sweep belongs to (non-decreasing).
            ego_pose_token: the pose this sweep links, written before or after with `add_ego_pose`; None writes
                the snapshot's ego state as this sweep's own pose row.

        Returns:
            The lidar_pc token (8 bytes).
        """
        i = self._sweep
        ts = int(snapshot.timestamp_us)
        pose_token = self.add_ego_pose(i, ts, snapshot.ego) if ego_pose_token is None else bytes(ego_pose_token)
        self._linked.add(pose_token)
        pc_token = make_token(self.log_name, "lidar_pc", i)
        scene_token = make_token(self.log_name, "scene", int(scene_index))
        filename = f"{self.log_name}/{LIDAR_CHANNEL}/{token_to_hex(pc_token)}.pcd"
        if points_lidar_N6 is not None:
            self._write_blob(filename, encode_pcd(points_lidar_N6))
        prev = self._pending_pc
        if prev is not None:
            prev[1] = pc_token
            _insert(self.con, "lidar_pc", prev)
        self._pending_pc = [pc_token, None, prev[0] if prev else None, pose_token, self.lidar_token, scene_token,
                            filename, ts]
        self._write_boxes(self._boxes_in_range(snapshot), pc_token, i)
        for k, (tag, track_id) in enumerate(snapshot.scenario_tags):
            agent = track_token(track_id) if track_id is not None else None
            _insert(self.con, "scenario_tag", (make_token(self.log_name, "tag", i, k), pc_token, tag, agent))
        for fid, status in sorted(snapshot.traffic_lights.items()):
            _insert(self.con, "traffic_light_status",
                    (make_token(self.log_name, "tl", i, fid), pc_token, int(fid), str(status)))
        if images:
            unknown = sorted(set(images) - set(CAMERA_CHANNELS))
            if unknown:
                raise ValueError(f"unknown camera channel(s) {unknown}")
            for ch in (c for c in CAMERA_CHANNELS if c in images):
                self.add_image(ch, images[ch], ts, pose_token, i)
        self._scene_sweeps.setdefault(int(scene_index), []).append(i)
        self._sweep_pose.append(pose_token)
        self._sweep += 1
        return pc_token

    def pose_token(self, k: int) -> bytes:
        """Token of ego pose number `k` of this log (`add_ego_pose(k, ...)`)."""
        return make_token(self.log_name, "ego_pose", int(k))

    def add_ego_pose(self, k: int, timestamp_us: int, e: EgoKinematics) -> bytes:
        """Write ego pose number `k` (rear axle, global; velocities and accelerations in the ego frame)."""
        token = self.pose_token(k)
        qw, qx, qy, qz = (float(v) for v in yaw_to_quat(e.yaw))
        _insert(self.con, "ego_pose", (
            token, int(timestamp_us), float(e.x), float(e.y), float(e.z), qw, qx, qy, qz,
            float(e.vx), float(e.vy), 0.0, float(e.ax), float(e.ay), 0.0, 0.0, 0.0, float(e.yaw_rate),
            self.epsg, self.log_token))
        self._poses.add(token)
        return token

    def _boxes_in_range(self, snap: WorldSnapshot) -> Sequence[ActorState]:
        if self.box_range_m is None:
            return snap.actors
        r2 = self.box_range_m ** 2
        return [a for a in snap.actors if (a.x - snap.ego.x) ** 2 + (a.y - snap.ego.y) ** 2 <= r2]

    def _write_boxes(self, actors: Sequence[ActorState], pc_token: bytes, i: int) -> None:
        """Hold back each track's newest box (its next_token is not known yet) and insert the previous one; the
        finished rows of a sweep go to the db in one executemany."""
        done: list[list] = []
        for a in sorted(actors, key=lambda a: a.track_id):
            tt = track_token(a.track_id)
            if a.track_id not in self._tracks:
                self._tracks.add(a.track_id)
                _insert(self.con, "track", (tt, self.category_tokens[a.category], float(a.width),
                                            float(a.length), float(a.height)))
            token = make_token(self.log_name, "lidar_box", i, a.track_id)
            prev = self._pending_box.pop(a.track_id, None)
            if prev is not None and self._last_seen[a.track_id] == i - 1:
                prev[3] = token
            elif prev is not None:  # the track was out of range: its old chain ends, a new one starts
                done.append(prev)
                prev = None
            if prev is not None:
                done.append(prev)
            self._last_seen[a.track_id] = i
            self._pending_box[a.track_id] = [
                token, pc_token, tt, None, prev[0] if prev else None, float(a.x), float(a.y), float(a.z),
                float(a.width), float(a.length), float(a.height), float(a.vx), float(a.vy), 0.0, wrap_yaw(a.yaw),
                1.0]
        _insert_many(self.con, "lidar_box", done)

    def add_image(self, channel: str, image: np.ndarray, timestamp_us: int, ego_pose_token: bytes,
                  frame: int) -> bytes:
        """Write one camera image (JPEG blob + `image` row) taken at `timestamp_us`, linked to `ego_pose_token`;
        `frame` (e.g. the trigger sweep index) makes its token. Images of a channel must come in time order."""
        import cv2  # heavy import kept local

        if channel not in self.camera_tokens:
            raise ValueError(f"image for {channel} but the rig has no such camera")
        cal = self.rig.cameras[channel]
        if image.dtype != np.uint8 or image.shape != (cal.height, cal.width, 3):
            raise ValueError(f"{channel}: image must be ({cal.height}, {cal.width}, 3) uint8, got {image.dtype} "
                             f"{image.shape}")
        ok, jpg = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]),
                               [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {channel}")
        token = make_token(self.log_name, "image", channel, int(frame))
        filename = f"{self.log_name}/{channel}/{token_to_hex(token)}.jpg"
        self._write_blob(filename, jpg.tobytes())
        prev = self._pending_img.get(channel)
        if prev is not None:
            prev[1] = token
            _insert(self.con, "image", prev)
        self._linked.add(bytes(ego_pose_token))
        self._pending_img[channel] = [token, None, prev[0] if prev else None, bytes(ego_pose_token),
                                      self.camera_tokens[channel], filename, int(timestamp_us)]
        self.num_images += 1
        return token

    def _write_blob(self, relpath: str, data: bytes) -> None:
        path = self.blob_dir.parent / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    # ------------------------------------------------------------------------------------------------ close
    def close(self, scene_roadblock_ids: Sequence[Sequence[int]] | None = None) -> Path:
        """Flush held-back rows, write the scene rows, commit and move the DB into place.

        Args:
            scene_roadblock_ids: per scene index, the route's roadblock ids (`lane_groups_polygons` fids),
                stored space-separated in `scene.roadblock_ids`; None or a missing entry -> "".

        Returns:
            The path of the written `.db`.
        """
        if self._pending_pc is not None:
            _insert(self.con, "lidar_pc", self._pending_pc)
        for ch in CAMERA_CHANNELS:
            if ch in self._pending_img:
                _insert(self.con, "image", self._pending_img[ch])
        for track_id in sorted(self._pending_box):
            _insert(self.con, "lidar_box", self._pending_box[track_id])
        missing = self._linked - self._poses
        if missing:
            raise ValueError(f"{self.log_name}: {len(missing)} linked ego_pose token(s) were never written")
        self._write_scenes(scene_roadblock_ids or [])
        self.con.executescript(INDEX_SQL)
        self.con.commit()
        self.con.close()
        os.replace(self._tmp_path, self.db_path)
        return self.db_path

    def _write_scenes(self, roadblocks: Sequence[Sequence[int]]) -> None:
        """One row per scene; the goal is the ego pose one scene length after the scene's end (or the last)."""
        last = len(self._sweep_pose) - 1
        for s, sweeps in sorted(self._scene_sweeps.items()):
            goal = self._sweep_pose[min(sweeps[-1] + len(sweeps), last)]
            ids = " ".join(str(int(r)) for r in roadblocks[s]) if s < len(roadblocks) else ""
            _insert(self.con, "scene", (make_token(self.log_name, "scene", s), self.log_token,
                                        f"scene-{s:04d}", goal, ids))

    def abort(self) -> None:
        """Discard a half-written log's DB (its blobs stay; the next run rewrites them)."""
        self.con.close()
        self._tmp_path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------------- maps
MAPS_JSON = "nuplan-maps-v1.0.json"
RASTER_RESOLUTION_M = 1.0  # m per pixel of the map rasters (real maps: 0.1)
# raster layer name (the devkit's) -> the vector layers whose polygons it rasterises
RASTER_LAYERS: dict[str, tuple[str, ...]] = {
    "drivable_area": (), "intersection": ("intersections",), "pedestrian_crossing": ("crosswalks",),
    "walkway": ("walkways",)}


def _map_rasters(vmap: Any) -> tuple[dict[str, np.ndarray], list[list[float]], tuple[float, float]] | None:
    """Rasterise the polygon layers of `RASTER_LAYERS` on one north-up grid covering all of them: name -> (H, W)
    uint8 0/1, the 4x4 global -> pixel matrix (pixel (i, j) is centred on global (x0 + i res, y1 - j res)) and
    (x0, y1). None if the map has no drivable polygons."""
    import cv2  # heavy import kept local
    import shapely

    from drivepipe.mapdata import SEMANTIC_LAYERS

    def polygons(layers: Sequence[str]) -> list[Any]:
        geoms = [f.geometry for name in layers for f in vmap.layer(name)]
        return [g for g in shapely.get_parts(geoms) if g.geom_type == "Polygon"]

    sources = {name: polygons(layers or SEMANTIC_LAYERS["drivable_area"]) for name, layers in RASTER_LAYERS.items()}
    if not sources["drivable_area"]:
        return None
    x0, y0, x1, y1 = shapely.total_bounds([p for polys in sources.values() for p in polys])
    res = RASTER_RESOLUTION_M
    M = [[1 / res, 0.0, 0.0, -x0 / res], [0.0, -1 / res, 0.0, y1 / res], [0.0, 0.0, 1.0, 0.0],
         [0.0, 0.0, 0.0, 1.0]]
    h, w = int(np.ceil((y1 - y0) / res)) + 1, int(np.ceil((x1 - x0) / res)) + 1

    def px(ring: Any) -> np.ndarray:
        xy = np.asarray(ring.coords)[:, :2]
        return np.round(np.stack([(xy[:, 0] - x0) / res, (y1 - xy[:, 1]) / res], 1)).astype(np.int32)

    rasters = {}
    for name, polys in sources.items():
        raster = np.zeros((h, w), dtype=np.uint8)
        for p in polys:
            cv2.fillPoly(raster, [px(p.exterior)], 1)
            if p.interiors:
                cv2.fillPoly(raster, [px(r) for r in p.interiors], 0)
        rasters[name] = raster
    return rasters, M, (float(x0), float(y1))


def _write_npz(path: Path, arr: np.ndarray) -> None:
    """`np.savez_compressed`-compatible file with a fixed zip timestamp (numpy's own stamps the wall clock)."""
    import io
    import zipfile

    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    info = zipfile.ZipInfo("data.npy", date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr(info, buf.getvalue())
    path.write_bytes(out.getvalue())


def write_maps(maps_root: Path, cities: Sequence[Any]) -> Path:
    """Write `nuplan-maps-v1.0.json` and `<location>/<version>/map.gpkg` for all four nuPlan locations; each map
    with a drivable area also gets the `RASTER_LAYERS` as GeoPackage tile tables in the map's UTM CRS (listed with
    their pixel transform in the json) and the devkit's `drivable_area.npy.npz` cache.

    Args:
        maps_root: the maps folder (`$NUPLAN_MAPS_ROOT`).
        cities: built cities (`.location`, `.version`, `.epsg`, `.vector_map`); locations without one get a stub
            map (meta + an empty `lane_connectors` layer), because the devkit opens all four at start-up.

    Returns:
        The path of the json file.
    """
    from drivepipe.mapdata import VectorMap
    from drivepipe.nuplan.gpkg import write_gpkg
    from drivepipe.nuplan.gpkg_raster import RasterLayer
    from drivepipe.utils.io import atomic_write_json

    maps_root = Path(maps_root)
    by_location = {c.location: c.vector_map for c in cities}
    index: dict[str, Any] = {}
    for location, (_, epsg, version) in sorted(LOCATION_INFO.items()):
        vmap = by_location.get(location) or VectorMap(location, version, epsg, {"lane_connectors": []})
        folder = maps_root / location / vmap.version
        folder.mkdir(parents=True, exist_ok=True)
        entry: dict[str, Any] = {"version": vmap.version, "layers": {}}
        made = _map_rasters(vmap)
        tiles = {}
        if made is not None:
            rasters, M, (x0, y1) = made
            half = RASTER_RESOLUTION_M / 2  # the raster's outer edge is half a pixel beyond the first centre
            for name, raster in rasters.items():
                tiles[name] = RasterLayer(raster * np.uint8(255), x0 - half, y1 + half, RASTER_RESOLUTION_M,
                                          vmap.epsg)
                entry["layers"][name] = {"shape": list(raster.shape), "transform_matrix": M,
                                         "precision": RASTER_RESOLUTION_M}
            _write_npz(folder / "drivable_area.npy.npz", rasters["drivable_area"])
        write_gpkg(folder / "map.gpkg", vmap, rasters=tiles)
        index[location] = entry
    atomic_write_json(maps_root / MAPS_JSON, index)
    return maps_root / MAPS_JSON
