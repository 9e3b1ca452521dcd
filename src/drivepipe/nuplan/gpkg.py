"""A minimal GeoPackage codec (sqlite3 + shapely WKB + pyproj, no GDAL) for nuPlan `map.gpkg` files.

Written files hold the three GeoPackage system tables (`gpkg_spatial_ref_sys`, `gpkg_contents`,
`gpkg_geometry_columns`), one feature table per `VectorMap` layer (`fid INTEGER PRIMARY KEY`, `geom` in GeoPackage
binary, one column per attribute) and the non-spatial nuPlan `meta` table (`key`, `value`) naming the city's UTM
CRS in `projectedCoordSystem`. Geometries are stored in WGS84 lon/lat (srs 4326) by default, as real maps are
believed to be; the reader reprojects every layer into `projectedCoordSystem`, like the devkit's `to_crs`.
"""

from __future__ import annotations

import os
import sqlite3
import struct
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import shapely

from drivepipe.errors import DataError
from drivepipe.mapdata import MapFeature, VectorMap
from drivepipe.nuplan.gpkg_raster import RasterLayer, write_raster_layer

WGS84 = 4326
_FIXED_TIME = "2021-01-01T00:00:00.000Z"  # gpkg_contents.last_change: fixed so files are byte-reproducible
_ENVELOPE_BYTES = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}  # GeoPackage header envelope indicator -> size

_SYSTEM_DDL = """
CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT NOT NULL, srs_id INTEGER NOT NULL PRIMARY KEY,
    organization TEXT NOT NULL, organization_coordsys_id INTEGER NOT NULL, definition TEXT NOT NULL,
    description TEXT);
CREATE TABLE gpkg_contents (table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL,
    identifier TEXT UNIQUE, description TEXT DEFAULT '', last_change DATETIME NOT NULL,
    min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE, srs_id INTEGER);
CREATE TABLE gpkg_geometry_columns (table_name TEXT NOT NULL, column_name TEXT NOT NULL,
    geometry_type_name TEXT NOT NULL, srs_id INTEGER NOT NULL, z TINYINT NOT NULL, m TINYINT NOT NULL,
    CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name));
CREATE TABLE meta (fid INTEGER PRIMARY KEY, key TEXT, value TEXT);
"""


@lru_cache(maxsize=16)
def _transformer(src_epsg: int, dst_epsg: int) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(src_epsg, dst_epsg, always_xy=True)


def _reproject(geoms: np.ndarray, src_epsg: int, dst_epsg: int) -> np.ndarray:
    """Reproject an array of shapely geometries (x = easting / lon, y = northing / lat)."""
    if src_epsg == dst_epsg or len(geoms) == 0:
        return geoms
    tr = _transformer(src_epsg, dst_epsg)

    def fn(xy: np.ndarray) -> np.ndarray:
        x, y = tr.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geoms, fn)


# ------------------------------------------------------------------------------------------------------- writing
def _gpkg_blob(geom: Any, wkb: bytes, srs_id: int) -> bytes:
    """GeoPackage binary: 'GP', version 0, flags (little-endian, xy envelope), srs_id, envelope, WKB."""
    if geom.is_empty:
        return b"GP\x00" + bytes([0b00010001]) + struct.pack("<i", srs_id) + wkb
    minx, miny, maxx, maxy = geom.bounds
    return b"GP\x00\x03" + struct.pack("<i4d", srs_id, minx, maxx, miny, maxy) + wkb


def _sql_type(values: list[Any]) -> str:
    """Declared column type for one attribute's values (None ignored): BOOLEAN, INTEGER, REAL or TEXT."""
    present = [v for v in values if v is not None]
    if not present:
        return "TEXT"
    if all(isinstance(v, (bool, np.bool_)) for v in present):
        return "BOOLEAN"
    numeric = [v for v in present if isinstance(v, (int, float, np.integer, np.floating))
               and not isinstance(v, (bool, np.bool_))]
    if len(numeric) < len(present):
        return "TEXT"
    return "INTEGER" if all(isinstance(v, (int, np.integer)) for v in numeric) else "REAL"


def _sql_value(v: Any, sql_type: str) -> Any:
    if v is None:
        return None
    if sql_type in ("BOOLEAN", "INTEGER"):
        return int(v)
    if sql_type == "REAL":
        return float(v)
    return str(v)


def _geometry_type(geoms: np.ndarray) -> str:
    names = {g.geom_type.upper() for g in geoms if not g.is_empty}
    return names.pop() if len(names) == 1 else "GEOMETRY"


def _write_layer(con: sqlite3.Connection, name: str, feats: list[MapFeature], src: int, srs: int) -> None:
    geoms = _reproject(np.array([f.geometry for f in feats], dtype=object), src, srs)
    keys = list(dict.fromkeys(k for f in feats for k in f.props if k not in ("fid", "geom")))
    types = {k: _sql_type([f.props.get(k) for f in feats]) for k in keys}
    cols = "".join(f', "{k}" {types[k]}' for k in keys)
    con.execute(f'CREATE TABLE "{name}" (fid INTEGER PRIMARY KEY NOT NULL, geom BLOB{cols})')
    wkbs = shapely.to_wkb(geoms, output_dimension=2, byte_order=1) if len(geoms) else []
    marks = ", ?" * (len(keys) + 2)
    rows = [(f.fid, _gpkg_blob(g, w, srs), *(_sql_value(f.props.get(k), types[k]) for k in keys))
            for f, g, w in zip(feats, geoms, wkbs)]
    con.executemany(f'INSERT INTO "{name}" VALUES ({marks[2:]})', rows)
    b = shapely.total_bounds(geoms) if len(geoms) else np.full(4, np.nan)
    bounds = [None if np.isnan(v) else float(v) for v in b]
    con.execute("INSERT INTO gpkg_contents VALUES (?, 'features', ?, '', ?, ?, ?, ?, ?, ?)",
                (name, name, _FIXED_TIME, *bounds, srs))
    con.execute("INSERT INTO gpkg_geometry_columns VALUES (?, 'geom', ?, ?, 0, 0)",
                (name, _geometry_type(geoms), srs))


def _write_srs(con: sqlite3.Connection, codes: Iterable[int]) -> None:
    con.executemany("INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)", [
        ("Undefined cartesian SRS", -1, "NONE", -1, "undefined", "undefined cartesian coordinate reference system"),
        ("Undefined geographic SRS", 0, "NONE", 0, "undefined", "undefined geographic coordinate reference system"),
    ])
    for code in sorted(set(codes)):
        crs = pyproj.CRS.from_epsg(code)
        con.execute("INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, 'EPSG', ?, ?, NULL)",
                    (crs.name, code, code, crs.to_wkt("WKT1_GDAL")))


def write_gpkg(path: str | Path, vmap: VectorMap, storage_epsg: int = WGS84,
               rasters: Mapping[str, RasterLayer] | None = None) -> None:
    """Write all layers of `vmap` (UTM `vmap.epsg`) to a GeoPackage, geometries stored in `storage_epsg`, plus the
    tiled raster layers `rasters` (name -> `RasterLayer`, georeferenced in their own `epsg`, normally `vmap.epsg`).

    The file is built under a temporary name and renamed, so a killed run never leaves a half-written map.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    con = sqlite3.connect(tmp)
    try:
        con.execute("PRAGMA application_id = 1196444487")  # 'GPKG'
        con.execute("PRAGMA user_version = 10200")        # GeoPackage 1.2
        with con:
            con.executescript(_SYSTEM_DDL)
            _write_srs(con, (WGS84, vmap.epsg, storage_epsg, *(r.epsg for r in (rasters or {}).values())))
            con.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier, description, last_change) "
                        "VALUES ('meta', 'attributes', 'meta', '', ?)", (_FIXED_TIME,))
            con.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
                ("projectedCoordSystem", f"EPSG:{vmap.epsg}"), ("geographicCoordSystem", "epsg:4326"),
                ("location", vmap.location), ("version", vmap.version)])
            for name, feats in vmap.layers.items():
                _write_layer(con, name, feats, vmap.epsg, storage_epsg)
            for name, raster in sorted((rasters or {}).items()):
                write_raster_layer(con, name, raster, _FIXED_TIME)
    finally:
        con.close()
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------------- reading
def _parse_blob(blob: bytes, source: str) -> bytes:
    """GeoPackage binary -> the WKB part (header and envelope skipped)."""
    if not isinstance(blob, bytes) or len(blob) < 8 or blob[:2] != b"GP":
        raise DataError(source, "geometry is not GeoPackage binary (missing 'GP' magic)")
    flags = blob[3]
    if flags & 0b100000:
        raise DataError(source, "extended GeoPackage geometry types are not supported")
    env = (flags >> 1) & 0b111
    if env not in _ENVELOPE_BYTES:
        raise DataError(source, f"invalid GeoPackage envelope indicator {env}")
    return blob[8 + _ENVELOPE_BYTES[env]:]


def _epsg_of_srs(con: sqlite3.Connection, srs_id: int, source: str) -> int:
    row = con.execute("SELECT organization, organization_coordsys_id, definition FROM gpkg_spatial_ref_sys "
                      "WHERE srs_id = ?", (srs_id,)).fetchone()
    if row is None:
        raise DataError(source, f"srs_id {srs_id} is not in gpkg_spatial_ref_sys")
    org, code, definition = row
    if str(org).upper() == "EPSG" and int(code) > 0:
        return int(code)
    try:
        epsg = pyproj.CRS.from_wkt(definition).to_epsg()
    except pyproj.exceptions.CRSError:
        epsg = None
    if epsg is None:
        raise DataError(source, f"srs_id {srs_id} ({org}:{code}) is not a known EPSG coordinate system")
    return int(epsg)


def _read_meta(con: sqlite3.Connection, source: str) -> int:
    """The projected EPSG code from the `meta` table."""
    try:
        rows = dict(con.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.DatabaseError:
        raise DataError(source, "map has no readable 'meta' table (key, value)") from None
    value = str(rows.get("projectedCoordSystem", ""))
    try:
        return pyproj.CRS.from_user_input(value).to_epsg() or int(value.split(":")[-1])
    except (pyproj.exceptions.CRSError, ValueError):
        raise DataError(source, f"meta.projectedCoordSystem {value!r} is not an EPSG code") from None


def _read_layer(con: sqlite3.Connection, table: str, column: str,
                source: str) -> tuple[list[MapFeature], np.ndarray]:
    """Features of one table (geometries still in the layer's storage CRS) and their geometry array."""
    info = con.execute(f'PRAGMA table_info("{table}")').fetchall()  # (cid, name, type, notnull, default, pk)
    pk = next((r[1] for r in info if r[5] == 1), None)
    if pk is None:
        raise DataError(source, f"layer {table!r} has no integer primary key (fid)")
    attrs = [(r[1], str(r[2]).upper()) for r in info if r[1] not in (pk, column)]
    names = ", ".join(f'"{c}"' for c in (pk, column, *(a for a, _ in attrs)))
    rows = con.execute(f'SELECT {names} FROM "{table}" ORDER BY "{pk}"').fetchall()
    where = f"{source}:{table}"
    wkbs = np.array([_parse_blob(r[1], where) for r in rows], dtype=object)
    try:
        geoms = shapely.from_wkb(wkbs) if len(wkbs) else np.array([], dtype=object)
    except shapely.errors.GEOSException as e:
        raise DataError(where, f"invalid WKB geometry ({e})") from None
    feats = []
    for r, g in zip(rows, geoms):
        props = {a: (bool(v) if t == "BOOLEAN" and v is not None else v) for (a, t), v in zip(attrs, r[2:])}
        feats.append(MapFeature(fid=int(r[0]), geometry=g, props=props))
    return feats, geoms


def read_gpkg(path: str | Path, location: str, version: str,
              layers: Iterable[str] | None = None) -> VectorMap:
    """Read a nuPlan map GeoPackage into a `VectorMap` in the UTM CRS named by `meta.projectedCoordSystem`.

    Args:
        path: the `map.gpkg` file.
        location, version: copied into the result (e.g. "us-nv-las-vegas-strip", "9.15.1915").
        layers: restrict to these feature tables (default: every table in `gpkg_geometry_columns`).

    Raises:
        DataError: not a GeoPackage, no `meta` table / projected CRS, unknown SRS or corrupt geometries.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "map GeoPackage does not exist")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        try:
            geom_cols = con.execute("SELECT table_name, column_name, srs_id FROM gpkg_geometry_columns "
                                    "ORDER BY rowid").fetchall()
        except sqlite3.DatabaseError:
            raise DataError(path, "not a GeoPackage (no gpkg_geometry_columns table)") from None
        epsg = _read_meta(con, str(path))
        wanted = None if layers is None else set(layers)
        out: dict[str, list[MapFeature]] = {}
        for table, column, srs_id in geom_cols:
            if wanted is not None and table not in wanted:
                continue
            feats, geoms = _read_layer(con, table, column, str(path))
            src = _epsg_of_srs(con, srs_id, f"{path}:{table}")
            for f, g in zip(feats, _reproject(geoms, src, epsg)):
                f.geometry = g
            out[table] = feats
    finally:
        con.close()
    return VectorMap(location=location, version=version, epsg=epsg, layers=out)
