"""Tiled raster layers inside a GeoPackage (OGC GeoPackage 1.2, "tiles"), as nuPlan's `map.gpkg` holds its
`drivable_area` (and other) rasters, which the devkit opens with GDAL as `GPKG:<file>:<layer>`.

One raster = one tile pyramid user table with a single zoom level (0) of `TILE_SIZE` square PNG tiles, one row in
`gpkg_contents` (data_type 'tiles', extent = the raster itself), one in `gpkg_tile_matrix_set` (extent = the tile grid,
padded with zeros to whole tiles, as the spec requires `max_x - min_x = matrix_width * tile_width * pixel_x_size`) and
one in `gpkg_tile_matrix`. Tile row 0 is the northernmost, column 0 the westernmost (spec §2.2.6). Pixel values are
grey levels; binary layers use 0 / 255 (the devkit thresholds binary layers to {0, 1} after reading).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivepipe.errors import DataError

TILE_SIZE = 256  # px, tile width and height

TILES_DDL = """
CREATE TABLE IF NOT EXISTS gpkg_tile_matrix_set (table_name TEXT NOT NULL PRIMARY KEY, srs_id INTEGER NOT NULL,
    min_x DOUBLE NOT NULL, min_y DOUBLE NOT NULL, max_x DOUBLE NOT NULL, max_y DOUBLE NOT NULL,
    CONSTRAINT fk_gtms_table_name FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name),
    CONSTRAINT fk_gtms_srs FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys (srs_id));
CREATE TABLE IF NOT EXISTS gpkg_tile_matrix (table_name TEXT NOT NULL, zoom_level INTEGER NOT NULL,
    matrix_width INTEGER NOT NULL, matrix_height INTEGER NOT NULL, tile_width INTEGER NOT NULL,
    tile_height INTEGER NOT NULL, pixel_x_size DOUBLE NOT NULL, pixel_y_size DOUBLE NOT NULL,
    CONSTRAINT pk_ttm PRIMARY KEY (table_name, zoom_level),
    CONSTRAINT fk_tmm_table_name FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name));
"""


@dataclass(frozen=True)
class RasterLayer:
    """A north-up single-band raster: `data` (H, W) uint8, row 0 northernmost; `min_x` / `max_y` the west / north
    edge of the raster in the CRS `epsg` (m); `pixel_size` the pixel edge (m)."""

    data: np.ndarray
    min_x: float
    max_y: float
    pixel_size: float
    epsg: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(min_x, min_y, max_x, max_y) of the raster's outer pixel edges."""
        h, w = self.data.shape
        return (self.min_x, self.max_y - h * self.pixel_size, self.min_x + w * self.pixel_size, self.max_y)


def write_raster_layer(con: sqlite3.Connection, name: str, layer: RasterLayer, last_change: str) -> None:
    """Add raster `name` to an open GeoPackage whose `gpkg_spatial_ref_sys` already holds `layer.epsg`."""
    import cv2  # heavy import kept local

    data = np.asarray(layer.data)
    if data.dtype != np.uint8 or data.ndim != 2 or 0 in data.shape:
        raise ValueError(f"raster {name!r} must be a non-empty (H, W) uint8 array, got {data.dtype} {data.shape}")
    h, w = data.shape
    cols, rows = -(-w // TILE_SIZE), -(-h // TILE_SIZE)
    padded = np.zeros((rows * TILE_SIZE, cols * TILE_SIZE), np.uint8)
    padded[:h, :w] = data
    res = float(layer.pixel_size)
    min_x, max_y = float(layer.min_x), float(layer.max_y)
    con.executescript(TILES_DDL)
    con.execute(f'CREATE TABLE "{name}" (id INTEGER PRIMARY KEY AUTOINCREMENT, zoom_level INTEGER NOT NULL, '
                'tile_column INTEGER NOT NULL, tile_row INTEGER NOT NULL, tile_data BLOB NOT NULL, '
                'UNIQUE (zoom_level, tile_column, tile_row))')
    con.execute("INSERT INTO gpkg_contents VALUES (?, 'tiles', ?, '', ?, ?, ?, ?, ?, ?)",
                (name, name, last_change, *layer.bounds, layer.epsg))
    con.execute("INSERT INTO gpkg_tile_matrix_set VALUES (?, ?, ?, ?, ?, ?)",
                (name, layer.epsg, min_x, max_y - rows * TILE_SIZE * res, min_x + cols * TILE_SIZE * res, max_y))
    con.execute("INSERT INTO gpkg_tile_matrix VALUES (?, 0, ?, ?, ?, ?, ?, ?)",
                (name, cols, rows, TILE_SIZE, TILE_SIZE, res, res))
    tiles = []
    for r in range(rows):
        for c in range(cols):
            tile = padded[r * TILE_SIZE:(r + 1) * TILE_SIZE, c * TILE_SIZE:(c + 1) * TILE_SIZE]
            ok, png = cv2.imencode(".png", tile, [cv2.IMWRITE_PNG_COMPRESSION, 9])
            if not ok:
                raise RuntimeError(f"PNG encoding failed for raster {name!r} tile ({c}, {r})")
            tiles.append((0, c, r, png.tobytes()))
    con.executemany(f'INSERT INTO "{name}" (zoom_level, tile_column, tile_row, tile_data) VALUES (?, ?, ?, ?)',
                    tiles)


def raster_layer_names(path: str | Path) -> list[str]:
    """Names of the tile tables listed in `gpkg_contents` (data_type 'tiles'), sorted."""
    con = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        return sorted(r[0] for r in con.execute("SELECT table_name FROM gpkg_contents WHERE data_type = 'tiles'"))
    except sqlite3.DatabaseError:
        raise DataError(path, "not a GeoPackage (no gpkg_contents table)") from None
    finally:
        con.close()


def read_raster_layer(path: str | Path, name: str) -> RasterLayer:
    """Read raster `name` (zoom level 0) from a GeoPackage and crop it to its `gpkg_contents` extent.

    Raises:
        DataError: no such tile table, inconsistent tile-matrix metadata, a tile outside the matrix, or a tile that is
            not a decodable single-size image.
    """
    import cv2

    src = f"{path}:{name}"
    con = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        contents = con.execute("SELECT min_x, min_y, max_x, max_y, srs_id FROM gpkg_contents WHERE table_name = ? "
                               "AND data_type = 'tiles'", (name,)).fetchone()
        tms = con.execute("SELECT srs_id, min_x, min_y, max_x, max_y FROM gpkg_tile_matrix_set WHERE table_name = ?",
                          (name,)).fetchone()
        tm = con.execute("SELECT matrix_width, matrix_height, tile_width, tile_height, pixel_x_size, pixel_y_size "
                         "FROM gpkg_tile_matrix WHERE table_name = ? AND zoom_level = 0", (name,)).fetchone()
        if contents is None or tms is None or tm is None:
            raise DataError(src, "not a tiles table with a zoom level 0 tile matrix")
        tiles = con.execute(f'SELECT tile_column, tile_row, tile_data FROM "{name}" WHERE zoom_level = 0').fetchall()
    except sqlite3.DatabaseError as exc:
        raise DataError(src, f"unreadable tile metadata ({exc})") from None
    finally:
        con.close()
    cols, rows, tw, th, px, py = tm
    srs, x0, y0, x1, y1 = tms
    if not (np.isclose(x1 - x0, cols * tw * px) and np.isclose(y1 - y0, rows * th * py) and np.isclose(px, py)):
        raise DataError(src, "tile matrix set extent disagrees with matrix size x tile size x pixel size")
    full = np.zeros((rows * th, cols * tw), np.uint8)
    for c, r, blob in tiles:
        if not (0 <= c < cols and 0 <= r < rows):
            raise DataError(src, f"tile ({c}, {r}) lies outside the {cols} x {rows} tile matrix")
        tile = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_GRAYSCALE)
        if tile is None or tile.shape != (th, tw):
            raise DataError(src, f"tile ({c}, {r}) is not a decodable {tw} x {th} image")
        full[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = tile
    c0, r0 = round((contents[0] - x0) / px), round((y1 - contents[3]) / py)
    c1, r1 = round((contents[2] - x0) / px), round((y1 - contents[1]) / py)
    return RasterLayer(data=full[r0:r1, c0:c1].copy(), min_x=x0 + c0 * px, max_y=y1 - r0 * py, pixel_size=float(px),
                       epsg=int(contents[4]))
