"""Merged lidar point clouds (devkit MergedPointCloud): binary PCD read/write and the legacy `.bin` / `.bin2` files.

The canonical in-memory layout is an (N, 6) float32 array with columns x, y, z (m, lidar frame), intensity,
ring, lidar_info (`schema.LidarColumn`). The decoder follows the devkit's header rules: `#` lines skipped, parsing
stops at `DATA`, all of VERSION FIELDS SIZE TYPE COUNT WIDTH HEIGHT VIEWPOINT POINTS DATA required, COUNT all 1,
FIELDS/SIZE/TYPE/COUNT of equal length, `DATA binary` only, exactly POINTS x record-size body bytes used.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from drivepipe.errors import DataError
from drivepipe.utils.io import atomic_write_bytes

PCD_FIELDS = ("x", "y", "z", "intensity", "ring", "lidar_info")
REQUIRED_KEYS = ("VERSION", "FIELDS", "SIZE", "TYPE", "COUNT", "WIDTH", "HEIGHT", "VIEWPOINT", "POINTS", "DATA")
_TYPE_KIND = {"F": "f", "U": "u", "I": "i"}
_MAX_HEADER_LINES = 64  # a PCD header has ~11 lines; stop early on binary garbage


def encode_pcd(points: np.ndarray) -> bytes:
    """(N, 6) points (cast to float32) -> binary PCD file bytes (header as in the released .pcd files)."""
    pts = np.ascontiguousarray(points, dtype="<f4")
    if pts.ndim != 2 or pts.shape[1] != len(PCD_FIELDS):
        raise ValueError(f"points must be (N, {len(PCD_FIELDS)}), got {pts.shape}")
    n = pts.shape[0]
    k = len(PCD_FIELDS)
    header = "\n".join((
        "# .PCD v0.7 - Point Cloud Data file format",
        "VERSION 0.7",
        "FIELDS " + " ".join(PCD_FIELDS),
        "SIZE " + " ".join(["4"] * k),
        "TYPE " + " ".join(["F"] * k),
        "COUNT " + " ".join(["1"] * k),
        f"WIDTH {n}",
        "HEIGHT 1",
        "VIEWPOINT 0 0 0 1 0 0 0",
        f"POINTS {n}",
        "DATA binary",
    )) + "\n"
    return header.encode("ascii") + pts.tobytes()


def write_pcd(path: str | Path, points_N6: np.ndarray) -> None:
    """Write (N, 6) float32 points as a binary PCD file (atomically)."""
    atomic_write_bytes(path, encode_pcd(points_N6))


def _parse_header(data: bytes, source: str) -> tuple[dict[str, list[str]], int]:
    """Header key -> value tokens, and the byte offset where the body starts."""
    header: dict[str, list[str]] = {}
    pos = 0
    for _ in range(_MAX_HEADER_LINES):
        end = data.find(b"\n", pos)
        if end < 0:
            raise DataError(source, "PCD header ends before the DATA line")
        try:
            line = data[pos:end].decode("ascii").strip()
        except UnicodeDecodeError:
            raise DataError(source, "PCD header is not ASCII (not a PCD file?)") from None
        pos = end + 1
        if not line or line.startswith("#"):
            continue
        key, *values = line.split()
        header[key.upper()] = values
        if key.upper() == "DATA":
            return header, pos
    raise DataError(source, f"PCD header has no DATA line within {_MAX_HEADER_LINES} lines")


def _record_dtype(header: dict[str, list[str]], source: str) -> np.dtype:
    """Validate the header and build the little-endian record dtype."""
    missing = [k for k in REQUIRED_KEYS if k not in header]
    if missing:
        raise DataError(source, f"PCD header lacks required key(s) {', '.join(missing)}")
    fields, sizes, types, counts = header["FIELDS"], header["SIZE"], header["TYPE"], header["COUNT"]
    if not (len(fields) == len(sizes) == len(types) == len(counts)) or not fields:
        raise DataError(source, f"PCD FIELDS/SIZE/TYPE/COUNT lengths differ ({len(fields)}/{len(sizes)}/"
                                f"{len(types)}/{len(counts)})")
    if any(c != "1" for c in counts):
        raise DataError(source, f"PCD COUNT must be all 1, got {' '.join(counts)}")
    if header["DATA"] != ["binary"]:
        raise DataError(source, f"PCD DATA must be 'binary', got {' '.join(header['DATA']) or 'nothing'!r}")
    absent = [f for f in PCD_FIELDS if f not in fields]
    if absent:
        raise DataError(source, f"PCD FIELDS lack {', '.join(absent)}")
    if len(set(fields)) != len(fields):
        raise DataError(source, f"PCD FIELDS repeat a name: {' '.join(fields)}")
    items = []
    for name, size, typ in zip(fields, sizes, types):
        kind = _TYPE_KIND.get(typ.upper())
        if kind is None or size not in ("1", "2", "4", "8") or (kind == "f" and size not in ("4", "8")):
            raise DataError(source, f"PCD field {name!r} has unsupported TYPE {typ} / SIZE {size}")
        items.append((name, f"<{kind}{size}"))
    return np.dtype(items)


def _point_count(header: dict[str, list[str]], source: str) -> int:
    try:
        n = int(header["POINTS"][0])
        [int(v) for v in header["VIEWPOINT"]]  # the devkit parses VIEWPOINT with int()
    except (ValueError, IndexError):
        raise DataError(source, "PCD POINTS / VIEWPOINT values are not integers") from None
    if n < 0:
        raise DataError(source, f"PCD POINTS is negative ({n})")
    return n


def decode_pcd(data: bytes, source: str) -> np.ndarray:
    """Binary PCD bytes -> (N, 6) float32 points, columns x y z intensity ring lidar_info.

    Raises:
        DataError: naming `source`, for any header or body defect.
    """
    data = data if isinstance(data, bytes) else bytes(data)
    header, start = _parse_header(data, source)
    dtype = _record_dtype(header, source)
    n = _point_count(header, source)
    need = n * dtype.itemsize
    if len(data) - start < need:
        raise DataError(source, f"PCD body is truncated: {len(data) - start} bytes, POINTS {n} need {need}")
    rec = np.frombuffer(data, dtype=dtype, count=n, offset=start)
    out = np.empty((n, len(PCD_FIELDS)), dtype=np.float32)
    for i, name in enumerate(PCD_FIELDS):
        out[:, i] = rec[name]
    return out


def _decode_legacy(raw: bytes, source: str, columns: int) -> np.ndarray:
    row_bytes = 4 * columns
    if len(raw) % row_bytes:
        raise DataError(source, f"{os.path.splitext(source)[1]} size {len(raw)} is not a multiple of {row_bytes} "
                                f"bytes (float32 x {columns} per point)")
    pts = np.frombuffer(raw, dtype="<f4").reshape(-1, columns)
    out = np.zeros((pts.shape[0], len(PCD_FIELDS)), dtype=np.float32)
    out[:, :columns] = pts  # .bin has no lidar_info column: it stays 0
    return out


def read_point_cloud(path: str | Path) -> np.ndarray:
    """Read a `.pcd`, legacy `.bin` (float32 x 5) or `.bin2` (float32 x 6) file -> (N, 6) float32.

    Raises:
        DataError: unreadable file, unknown extension or malformed content.
    """
    path = Path(path)
    if path.suffix.lower() not in (".pcd", ".bin", ".bin2"):
        raise DataError(path, f"unknown point-cloud extension {path.suffix!r} (expected .pcd, .bin or .bin2)")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(path, f"cannot read point cloud ({e.strerror or e})") from None
    return decode_point_cloud(data, str(path))


def decode_point_cloud(data: bytes, source: str) -> np.ndarray:
    """The bytes of a `.pcd`, `.bin` or `.bin2` file (format from `source`'s extension) -> (N, 6) float32.

    Raises:
        DataError: naming `source`: unknown extension or malformed content.
    """
    suffix = os.path.splitext(source)[1].lower()
    if suffix == ".pcd":
        return decode_pcd(data, source)
    if suffix in (".bin", ".bin2"):
        return _decode_legacy(data, source, 5 if suffix == ".bin" else 6)
    raise DataError(source, f"unknown point-cloud extension {suffix!r} (expected .pcd, .bin or .bin2)")
