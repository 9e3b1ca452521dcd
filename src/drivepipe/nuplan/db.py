"""`NuplanLog`: one nuPlan log `.db`, read without the devkit through one read-only sqlite connection.

Everything a frame needs is read once per log into numpy arrays (lidar sweeps with their ego poses, images per
channel, and, on first use, all boxes grouped by sweep), so building a `SensorBundle` runs no SQL. Columns are
selected by name; the 12 tables and the columns read here are checked when the log is opened, and every problem is
a `DataError` naming the db file. The file is never written (`mode=ro` URI).

Frames and units: positions in the city's UTM frame (m), quaternions (w, x, y, z), ego
velocities/accelerations/rates in the ego frame, box velocities in the global frame, times in µs.
"""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np

from drivepipe.errors import DataError
from drivepipe.nuplan.maps import MapsRoot
from drivepipe.nuplan.records import (
    BoxTable,
    ChannelImages,
    LidarPcs,
    Scene,
    camera_calibration,
    lidar_extrinsic,
    nearest_index,
    track_ids,
)
from drivepipe.schema import CATEGORY_INDEX

IMAGE_MATCH_US = 50_000  # devkit joins images to a sweep within ±50 ms
LIDAR_CHANNEL = "MergedPointCloud"
_EGO_COLS = ("x", "y", "z", "qw", "qx", "qy", "qz", "vx", "vy", "vz", "acceleration_x", "acceleration_y",
             "acceleration_z", "angular_rate_x", "angular_rate_y", "angular_rate_z")
_BOX_COLS = ("x", "y", "z", "length", "width", "height", "vx", "vy", "vz", "yaw")
# Columns this reader selects (a subset of tables.TABLE_COLUMNS; extra columns in real DBs are ignored).
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "log": ("token", "vehicle_name", "logfile", "location", "map_version"),
    "ego_pose": ("token", "timestamp") + _EGO_COLS,
    "camera": ("token", "channel", "model", "translation", "rotation", "intrinsic", "distortion", "width", "height"),
    "image": ("token", "ego_pose_token", "camera_token", "filename_jpg", "timestamp"),
    "lidar": ("token", "channel", "translation", "rotation"),
    "lidar_pc": ("token", "ego_pose_token", "scene_token", "filename", "timestamp"),
    "lidar_box": ("lidar_pc_token", "track_token") + _BOX_COLS,
    "track": ("token", "category_token"),
    "category": ("token", "name"),
    "scene": ("token", "name", "roadblock_ids"),
    "scenario_tag": ("lidar_pc_token", "type"),
    "traffic_light_status": ("lidar_pc_token", "lane_connector_id", "status"),
}


class MissingBlobError(DataError):
    """A row references a sensor file that does not exist (source = the expected path)."""

CONDITIONS_TABLE = "synthetic_conditions"  # extra per-log table of the synthetic world (not in real nuPlan)


def read_conditions(con: sqlite3.Connection) -> dict | None:
    """The recording conditions of a synthetic log (time of day, weather, sensor noise; one row of the extra table
    `synthetic_conditions`) as a dict without its log token; None for logs without that table (real nuPlan)."""
    if con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                   (CONDITIONS_TABLE,)).fetchone() is None:
        return None
    cur = con.execute(f"SELECT * FROM {CONDITIONS_TABLE} LIMIT 1")
    row = cur.fetchone()
    return None if row is None else {d[0]: v for d, v in zip(cur.description, row) if d[0] != "log_token"}


class NuplanLog:
    """One log database plus the sensor folder and maps it refers to.

    Args:
        db_path: the `<log_name>.db` file (opened read-only).
        sensor_root: folder that `lidar_pc.filename` / `image.filename_jpg` are relative to.
        maps: maps root used by `load_map`.
        missing_blob_policy: "fail" raises `MissingBlobError`; "skip" counts the problem in `skipped` and drops the
            camera (or the sweep, see `scenarios.enumerate_scenarios`).

    Raises:
        DataError: the file is not a readable SQLite database, a table or column is missing, the calibration is
            not sane, a category name is unknown, or the log has no sweeps.
    """

    def __init__(self, db_path: Path | str, sensor_root: Path | str, maps: MapsRoot | None,
                 missing_blob_policy: Literal["fail", "skip"] = "fail") -> None:
        if missing_blob_policy not in ("fail", "skip"):
            raise ValueError(f"missing_blob_policy must be 'fail' or 'skip', got {missing_blob_policy!r}")
        self.db_path = Path(db_path)
        self.sensor_root = Path(sensor_root)
        self._sensor_root_str = str(self.sensor_root)
        self.maps = maps
        self.missing_blob_policy = missing_blob_policy
        self.skipped: Counter[str] = Counter()
        self._conn = _open_readonly(self.db_path)
        try:
            self._load_metadata()
        except BaseException:
            self.close()
            raise
        self._boxes: BoxTable | None = None
        self.derived: dict[Any, Any] = {}  # memo of values bundle.py derives per log (route paths per scene)

    # ------------------------------------------------------------------------------------------- loading
    def _load_metadata(self) -> None:
        _check_schema(self.db_path, self._query("SELECT name FROM sqlite_master WHERE type = 'table'"),
                      {t: [r[1] for r in self._query(f"PRAGMA table_info({t})")] for t in REQUIRED_COLUMNS})
        logs = self._query("SELECT logfile, vehicle_name, location, map_version FROM log")
        if len(logs) != 1:
            raise DataError(self.db_path, f"table log must have exactly one row, found {len(logs)}")
        logfile, self.vehicle_name, self.city, map_version = logs[0]
        self.log_name = str(logfile or self.db_path.stem)
        self.location = str(map_version or "").removesuffix(".gpkg")
        self.category_by_token = self._load_categories()
        self.cameras = {ch: camera_calibration(self.db_path, row)
                        for ch, row in self._load_camera_rows().items()}
        self.T_ego_from_lidar = self._load_lidar_extrinsic()
        self.lidar_pcs = self._load_lidar_pcs()
        self.token_index = {str(t): i for i, t in enumerate(self.lidar_pcs.token)}
        self.scenes = self._load_scenes()
        self.scenario_types = {bytes(tok).hex(): str(typ) for tok, typ in self._query(
            "SELECT lidar_pc_token, MAX(type) FROM scenario_tag GROUP BY lidar_pc_token")}
        self.images = self._load_images()
        self.conditions = read_conditions(self._conn)

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise DataError(self.db_path, f"SQLite error ({exc}); the file may be corrupt or truncated") from None

    def _load_categories(self) -> dict[bytes, int]:
        out = {}
        for token, name in self._query("SELECT token, name FROM category"):
            if name not in CATEGORY_INDEX:
                raise DataError(self.db_path, f"unknown category name {name!r} (known: {list(CATEGORY_INDEX)})")
            out[bytes(token)] = CATEGORY_INDEX[name]
        return out

    def _load_camera_rows(self) -> dict[str, tuple]:
        rows: dict[str, tuple] = {}
        for row in self._query("SELECT channel, model, translation, rotation, intrinsic, distortion, width, height "
                               "FROM camera"):
            if row[0] in rows:
                raise DataError(self.db_path, f"camera channel {row[0]!r} appears twice")
            rows[str(row[0])] = row
        return rows

    def _load_lidar_extrinsic(self) -> np.ndarray:
        rows = self._query("SELECT translation, rotation FROM lidar WHERE channel = ?", (LIDAR_CHANNEL,))
        if len(rows) != 1:
            raise DataError(self.db_path, f"table lidar must have exactly one {LIDAR_CHANNEL} row, found {len(rows)}")
        return lidar_extrinsic(f"{self.db_path}:lidar.{LIDAR_CHANNEL}", *rows[0])

    def _load_lidar_pcs(self) -> LidarPcs:
        ego = ", ".join(f"ep.{c}" for c in _EGO_COLS)
        rows = self._query(
            "SELECT lp.token, lp.timestamp, lp.scene_token, lp.ego_pose_token, lp.filename, ep.token, " + ego +
            " FROM lidar_pc lp LEFT JOIN ego_pose ep ON ep.token = lp.ego_pose_token ORDER BY lp.timestamp")
        if not rows:
            raise DataError(self.db_path, "table lidar_pc is empty")
        dangling = sum(r[5] is None for r in rows)
        if dangling:
            raise DataError(self.db_path, f"{dangling} lidar_pc rows reference a missing ego_pose")
        vals = np.array([r[6:] for r in rows], dtype=np.float64)
        if not np.isfinite(vals[:, :7]).all():
            raise DataError(self.db_path, "ego_pose has non-finite positions or orientations")
        return LidarPcs(
            token=np.array([_hex(r[0]) for r in rows]), timestamp_us=np.array([r[1] for r in rows], np.int64),
            scene_token=np.array([_hex(r[2]) for r in rows]), ego_pose_token=np.array([_hex(r[3]) for r in rows]),
            filename=np.array([str(r[4]) for r in rows], dtype=object),
            xyz=vals[:, 0:3], quat=vals[:, 3:7], velocity=vals[:, 7:10], acceleration=vals[:, 10:13],
            angular_rate=np.nan_to_num(vals[:, 13:16]))

    def _load_scenes(self) -> list[Scene]:
        scenes = []
        for token, name, roadblocks in self._query("SELECT token, name, roadblock_ids FROM scene ORDER BY name"):
            ids = tuple(int(s) for s in str(roadblocks or "").replace(",", " ").split() if s.lstrip("-").isdigit())
            scenes.append(Scene(token=_hex(token), name=str(name), roadblock_ids=ids))
        return scenes

    def _load_images(self) -> dict[str, ChannelImages]:
        rows = self._query("SELECT c.channel, i.timestamp, i.token, i.filename_jpg, i.ego_pose_token FROM image i "
                           "JOIN camera c ON c.token = i.camera_token ORDER BY c.channel, i.timestamp, i.token")
        out: dict[str, ChannelImages] = {}
        for channel in sorted({r[0] for r in rows}):
            sel = [r for r in rows if r[0] == channel]
            out[channel] = ChannelImages(timestamp_us=np.array([r[1] for r in sel], np.int64),
                                         token=np.array([_hex(r[2]) for r in sel]),
                                         filename=np.array([str(r[3]) for r in sel], dtype=object),
                                         ego_pose_token=np.array([_hex(r[4]) for r in sel]))
        return out

    @property
    def boxes(self) -> BoxTable:
        """All boxes of the log, read with one query on first access."""
        if self._boxes is None:
            self._boxes = self._load_boxes()
        return self._boxes

    def _load_boxes(self) -> BoxTable:
        cols = ", ".join(f"lb.{c}" for c in _BOX_COLS)
        rows = self._query(f"SELECT lb.lidar_pc_token, lb.track_token, t.category_token, {cols} "
                           "FROM lidar_box lb LEFT JOIN track t ON t.token = lb.track_token")
        columns = list(zip(*rows)) or [()] * (3 + len(_BOX_COLS))  # column-wise: converted with numpy below
        frame = self._sweep_of_tokens(columns[0])
        cat = np.array([self.category_by_token.get(bytes(t), -1) if t is not None else -1 for t in columns[2]],
                       np.int64)
        keep = np.flatnonzero((frame >= 0) & (cat >= 0))
        if len(keep) < len(rows):
            self.skipped["lidar_box with unknown lidar_pc or track"] += len(rows) - len(keep)
        by_sweep = np.argsort(frame[keep], kind="stable")
        rows_kept = keep[by_sweep]
        vals = np.array(columns[3:], dtype=np.float64).reshape(len(_BOX_COLS), -1).T[rows_kept]
        return BoxTable(
            offsets=np.searchsorted(frame[rows_kept], np.arange(len(self.lidar_pcs) + 1)),
            center=vals[:, 0:3], size=vals[:, 3:6], yaw=vals[:, 9],
            velocity=np.nan_to_num(vals[:, 6:9]), category=cat[rows_kept],
            track_id=track_ids(columns[1])[rows_kept])

    def traffic_lights(self) -> dict[str, dict[int, str]]:
        """lidar_pc token hex -> {lane connector fid: status} from traffic_light_status ('green' | 'red' | ...)."""
        out: dict[str, dict[int, str]] = {}
        for tok, fid, status in self._query(
                "SELECT lidar_pc_token, lane_connector_id, status FROM traffic_light_status"):
            out.setdefault(bytes(tok).hex(), {})[int(fid)] = str(status)
        return out

    def scenario_tags(self) -> dict[str, set[str]]:
        """lidar_pc token hex -> every scenario_tag type of that sweep (scenario_types keeps only MAX(type))."""
        out: dict[str, set[str]] = {}
        for tok, typ in self._query("SELECT lidar_pc_token, type FROM scenario_tag"):
            out.setdefault(bytes(tok).hex(), set()).add(str(typ))
        return out

    def _sweep_of_tokens(self, tokens: tuple) -> np.ndarray:
        """Row in `lidar_pcs` of each lidar_pc token (blob), -1 for unknown ones; one numpy lookup when every token
        has the documented 8 bytes."""
        own = [bytes.fromhex(t) for t in self.lidar_pcs.token]
        if all(len(t) == 8 for t in own) and all(isinstance(t, bytes) and len(t) == 8 for t in tokens):
            keys = np.frombuffer(b"".join(own), ">u8")
            query = np.frombuffer(b"".join(tokens), ">u8")
            order = np.argsort(keys)
            pos = np.minimum(np.searchsorted(keys[order], query), len(keys) - 1)
            return np.where(keys[order][pos] == query, order[pos], -1).astype(np.int64)
        row_of = {t: i for i, t in enumerate(own)}
        return np.array([row_of.get(bytes(t), -1) if t is not None else -1 for t in tokens], np.int64)

    # ------------------------------------------------------------------------------------------- access
    @property
    def duration_s(self) -> float:
        """Time from the first to the last sweep, in seconds."""
        ts = self.lidar_pcs.timestamp_us
        return float(ts[-1] - ts[0]) / 1e6

    def match_image(self, channel: str, timestamp_us: int) -> int | None:
        """Row in `images[channel]` nearest in time to `timestamp_us` if within ±50 ms (ties: the earlier image),
        else None."""
        imgs = self.images.get(channel)
        if imgs is None:
            return None
        j = int(nearest_index(imgs.timestamp_us, timestamp_us, IMAGE_MATCH_US))
        return j if j >= 0 else None

    def image_rows(self, channel: str) -> np.ndarray:
        """(sweeps,) int64: for every lidar sweep, its `match_image` row in `images[channel]`, -1 where none;
        computed once per channel."""
        key = ("image_rows", channel)
        if key not in self.derived:
            imgs = self.images.get(channel)
            sweeps = self.lidar_pcs.timestamp_us
            self.derived[key] = (np.full(sweeps.shape, -1, np.int64) if imgs is None
                                 else nearest_index(imgs.timestamp_us, sweeps, IMAGE_MATCH_US))
        return self.derived[key]

    def camera_sweeps(self) -> np.ndarray:
        """(sweeps,) bool: the sweeps the devkit keeps with `include_cameras` — those whose ego pose is some image's
        ego pose (image.ego_pose_token = lidar_pc.ego_pose_token; nuPlan links an image to its trigger sweep's
        pose). A log with images but no such link falls back to the sweep nearest in time to each image. A log
        without images: none. Computed once per log."""
        if "camera_sweeps" not in self.derived:
            imgs = list(self.images.values())
            pose_of_image = set().union(*(set(c.ego_pose_token.tolist()) for c in imgs)) - {""}
            keep = np.isin(self.lidar_pcs.ego_pose_token, sorted(pose_of_image))
            if imgs and not keep.any():
                ts = self.lidar_pcs.timestamp_us
                nearest = nearest_index(ts, np.concatenate([c.timestamp_us for c in imgs]), IMAGE_MATCH_US)
                keep[nearest[nearest >= 0]] = True
            self.derived["camera_sweeps"] = keep
        return self.derived["camera_sweeps"]

    def blob_path(self, relative: str) -> Path:
        return self.sensor_root / relative

    def read_blob(self, relative: str, referenced_by: str) -> tuple[str, bytes] | None:
        """(path, bytes) of a sensor file, opened once (no separate existence check), or the missing-blob policy:
        raise (fail) or count and return None (skip).

        Raises:
            MissingBlobError: the file does not exist and the policy is "fail".
            DataError: the file exists but cannot be read.
        """
        path = os.path.join(self._sensor_root_str, relative)
        try:
            with open(path, "rb") as f:
                return path, f.read()
        except FileNotFoundError:
            return self._missing_blob(Path(path), referenced_by)
        except OSError as exc:
            raise DataError(Path(path), f"cannot read sensor file ({exc.strerror or exc})") from None

    def require_blob(self, relative: str, referenced_by: str) -> Path | None:
        """Path of a sensor file, or the missing-blob policy: raise (fail) or count and return None (skip).

        Raises:
            MissingBlobError: the file does not exist and the policy is "fail".
        """
        path = self.blob_path(relative)
        return path if path.is_file() else self._missing_blob(path, referenced_by)

    def _missing_blob(self, path: Path, referenced_by: str) -> None:
        """The missing-blob policy: "fail" raises MissingBlobError, "skip" counts the file in `skipped`."""
        if self.missing_blob_policy == "fail":
            raise MissingBlobError(path, f"missing blob referenced by {referenced_by}")
        self.skipped[f"missing blob ({referenced_by})"] += 1

    def load_map(self):
        """The VectorMap of this log's location (cached by the MapsRoot)."""
        if self.maps is None:
            raise DataError(self.db_path, "no maps root given; cannot load the map")
        return self.maps.load(self.location)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> NuplanLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------- helpers
def _open_readonly(path: Path) -> sqlite3.Connection:
    """One read-only connection; a missing, empty, truncated or non-SQLite file is a DataError naming it."""
    if not path.is_file():
        raise DataError(path, "log database not found")
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        raise DataError(path, "not a SQLite database (bad or missing header)")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    page_count = int.from_bytes(header[28:32], "big")
    header_size_valid = header[92:96] == header[24:28]  # "version-valid-for" == change counter (SQLite spec)
    if header_size_valid and page_count and size < page_size * page_count:
        raise DataError(path, f"database is truncated ({size} bytes, header says {page_size * page_count})")
    try:
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
    except sqlite3.Error as exc:
        raise DataError(path, f"cannot open read-only ({exc})") from None


def _check_schema(path: Path, table_rows: list[tuple], columns: dict[str, list[str]]) -> None:
    present = {r[0] for r in table_rows}
    for table, required in REQUIRED_COLUMNS.items():
        if table not in present:
            raise DataError(path, f"missing table {table!r}")
        missing = [c for c in required if c not in columns[table]]
        if missing:
            raise DataError(path, f"table {table!r} is missing column(s) {missing}")


def _hex(token: Any) -> str:
    return bytes(token).hex() if token is not None else ""
