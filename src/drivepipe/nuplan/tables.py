"""The 12 tables of a nuPlan log `.db` (the columns nuplan-devkit's ORM reads) and the 8-byte token helpers.

`SCHEMA_SQL` is the DDL the synthetic writer uses; `TABLE_COLUMNS` lists the columns a reader may require. Real DBs
may carry extra columns and may or may not have indexes, so readers select columns by name and never rely on the
indexes created by `INDEX_SQL` (they only speed up reading our own synthetic files).
"""

from __future__ import annotations

import hashlib

TOKEN_BYTES = 8  # real nuPlan tokens are 8-byte BLOBs, shown as 16 lowercase hex characters

# (column, declared SQLite type) per table, in DDL order. Token columns are BLOBs; times are INTEGER microseconds.
_TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "log": (
        ("token", "BLOB NOT NULL PRIMARY KEY"), ("vehicle_name", "VARCHAR(64)"), ("date", "VARCHAR(64)"),
        ("timestamp", "INTEGER"), ("logfile", "VARCHAR(64)"), ("location", "VARCHAR(64)"),
        ("map_version", "VARCHAR(64)"),
    ),
    "ego_pose": (
        ("token", "BLOB NOT NULL PRIMARY KEY"), ("timestamp", "INTEGER"),
        ("x", "FLOAT"), ("y", "FLOAT"), ("z", "FLOAT"),
        ("qw", "FLOAT"), ("qx", "FLOAT"), ("qy", "FLOAT"), ("qz", "FLOAT"),
        ("vx", "FLOAT"), ("vy", "FLOAT"), ("vz", "FLOAT"),
        ("acceleration_x", "FLOAT"), ("acceleration_y", "FLOAT"), ("acceleration_z", "FLOAT"),
        ("angular_rate_x", "FLOAT"), ("angular_rate_y", "FLOAT"), ("angular_rate_z", "FLOAT"),
        ("epsg", "INTEGER"), ("log_token", "BLOB NOT NULL"),
    ),
    "camera": (
        ("token", "BLOB NOT NULL PRIMARY KEY"), ("log_token", "BLOB NOT NULL"), ("channel", "VARCHAR(64)"),
        ("model", "VARCHAR(64)"), ("translation", "BLOB"), ("rotation", "BLOB"), ("intrinsic", "BLOB"),
        ("distortion", "BLOB"), ("width", "INTEGER"), ("height", "INTEGER"),
    ),
    "image": (
        ("token", "BLOB NOT NULL PRIMARY KEY"), ("next_token", "BLOB"), ("prev_token", "BLOB"),
        ("ego_pose_token", "BLOB NOT NULL"), ("camera_token", "BLOB NOT NULL"),
        ("filename_jpg", "VARCHAR(128)"), ("timestamp", "INTEGER"),
    ),
    "lidar": (
        ("token", "BLOB NOT NULL PRIMARY KEY"), ("log_token", "BLOB NOT NULL"), ("channel", "VARCHAR(64)"),
        ("model", "VARCHAR(64)"), ("translation", "BLOB"), ("rotation", "BLOB"),
    ),
    "lidar_pc": (
        ("token", "BLOB NOT NULL PRIMARY KEY"), ("next_token", "BLOB"), ("prev_token", "BLOB"),
        ("ego_pose_token", "BLOB NOT NULL"), ("lidar_token", "BLOB NOT NULL"), ("scene_token", "BLOB"),
        ("filename", "VARCHAR(128)"), ("timestamp", "INTEGER"),
    ),
    "lidar_box": (
        ("token", "BLOB NOT NULL PRIMARY KEY"), ("lidar_pc_token", "BLOB NOT NULL"),
        ("track_token", "BLOB NOT NULL"), ("next_token", "BLOB"), ("prev_token", "BLOB"),
        ("x", "FLOAT"), ("y", "FLOAT"), ("z", "FLOAT"),
        ("width", "FLOAT"), ("length", "FLOAT"), ("height", "FLOAT"),
        ("vx", "FLOAT"), ("vy", "FLOAT"), ("vz", "FLOAT"), ("yaw", "FLOAT"), ("confidence", "FLOAT"),
    ),
    "track": (
        ("token", "BLOB NOT NULL PRIMARY KEY"), ("category_token", "BLOB NOT NULL"),
        ("width", "FLOAT"), ("length", "FLOAT"), ("height", "FLOAT"),
    ),
    "category": (
        ("token", "BLOB NOT NULL PRIMARY KEY"), ("name", "VARCHAR(64)"), ("description", "TEXT"),
    ),
    "scene": (
        ("token", "BLOB NOT NULL PRIMARY KEY"), ("log_token", "BLOB NOT NULL"), ("name", "TEXT"),
        ("goal_ego_pose_token", "BLOB"), ("roadblock_ids", "TEXT"),
    ),
    "scenario_tag": (
        ("token", "BLOB NOT NULL PRIMARY KEY"), ("lidar_pc_token", "BLOB NOT NULL"), ("type", "TEXT"),
        ("agent_track_token", "BLOB"),
    ),
    "traffic_light_status": (
        ("token", "BLOB NOT NULL PRIMARY KEY"), ("lidar_pc_token", "BLOB NOT NULL"),
        ("lane_connector_id", "INTEGER"), ("status", "VARCHAR(8)"),
    ),
}

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {t: tuple(c for c, _ in cols) for t, cols in _TABLES.items()}


def _create_table(name: str) -> str:
    cols = ",\n    ".join(f"{c} {typ}" for c, typ in _TABLES[name])
    return f"CREATE TABLE {name} (\n    {cols}\n);"


SCHEMA_SQL: str = "\n".join(_create_table(t) for t in _TABLES)

# Speed-ups for our own files only (real DBs may lack them; readers must not depend on them).
INDEX_SQL: str = "\n".join((
    "CREATE INDEX idx_lidar_box_lidar_pc_token ON lidar_box(lidar_pc_token);",
    "CREATE INDEX idx_lidar_box_track_token ON lidar_box(track_token);",
    "CREATE INDEX idx_lidar_pc_timestamp ON lidar_pc(timestamp);",
    "CREATE INDEX idx_image_timestamp ON image(timestamp);",
))


def token_to_bytes(hex16: str) -> bytes:
    """16 hex characters -> 8-byte token BLOB.

    Raises:
        ValueError: not a string of exactly 16 hex characters.
    """
    if not isinstance(hex16, str) or len(hex16) != 2 * TOKEN_BYTES:
        raise ValueError(f"token must be {2 * TOKEN_BYTES} hex characters, got {hex16!r}")
    try:
        return bytes.fromhex(hex16)
    except ValueError:
        raise ValueError(f"token is not hexadecimal: {hex16!r}") from None


def token_to_hex(blob: bytes) -> str:
    """8-byte token BLOB (bytes / bytearray / memoryview) -> 16 lowercase hex characters.

    Raises:
        ValueError: not a bytes-like value of exactly 8 bytes.
    """
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise ValueError(f"token must be a {TOKEN_BYTES}-byte BLOB, got {type(blob).__name__}")
    raw = bytes(blob)
    if len(raw) != TOKEN_BYTES:
        raise ValueError(f"token must be {TOKEN_BYTES} bytes, got {len(raw)}")
    return raw.hex()


def make_token(*parts: object) -> bytes:
    """Deterministic 8-byte token from the `str()` of each part (first 8 bytes of a sha256)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(str(p).encode("utf-8"))
        h.update(b"\x1f")  # separator so ("ab", "c") != ("a", "bc")
    return h.digest()[:TOKEN_BYTES]
