"""The ego-centred top-down ground raster: surface labels (terrain, walkway, asphalt, lane, paint, crosswalk) from
the vector map, shared by the camera renderer (texture) and the lidar renderer (intensities)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import LineString, Polygon

from drivepipe.mapdata import VectorMap
from drivepipe.utils import detmath
from drivepipe.utils.geometry import pose_to_transform

# Ground surface labels of the top-down raster (shared with the lidar renderer for intensities).
LABEL_TERRAIN, LABEL_WALKWAY, LABEL_ASPHALT, LABEL_LANE, LABEL_PAINT, LABEL_CROSSWALK = range(6)
NUM_LABELS = 6
RASTER_RADIUS_M = 60.0        # half-side of the ego-centred ground raster
RASTER_RES_M = 0.1            # m per raster pixel
_MARKING_WIDTH_M = 0.15       # painted lane-divider width
_CROSSWALK_STRIPE_M = 0.5     # stripe and gap width of zebra crossings

@dataclass(frozen=True)
class GroundRaster:
    """Top-down surface labels around the ego. labels: (S, S) uint8, row i at ego x = R - (i + 0.5) res (forward is
    up), column j at ego y = R - (j + 0.5) res (left is left), R = radius_m, res = res_m."""

    labels: np.ndarray
    radius_m: float
    res_m: float
    pose: tuple[float, float, float] = (0.0, 0.0, 0.0)  # ego (x, y, yaw) in the global frame, m / rad

    def ego_to_pixel(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) ego-frame (x, y) m -> (N, 2) float (column, row), pixel centres at integers."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return np.stack([(self.radius_m - xy[:, 1]) / self.res_m - 0.5,
                         (self.radius_m - xy[:, 0]) / self.res_m - 0.5], axis=1)

    def label_at(self, xy: np.ndarray) -> np.ndarray:
        """(N,) uint8 label of the nearest raster cell (edge cells continue beyond the raster)."""
        pix = np.rint(self.ego_to_pixel(xy)).astype(np.int64)
        size = self.labels.shape[0]
        return self.labels[np.clip(pix[:, 1], 0, size - 1), np.clip(pix[:, 0], 0, size - 1)]


_RASTER_CACHE: list[tuple[VectorMap, tuple[float, float, float], GroundRaster]] = []


def ground_raster(vmap: VectorMap, ego) -> GroundRaster:
    """Ground labels around an ego pose (`EgoKinematics`-like: x, y, yaw), cached for the last two poses so the
    cameras and the lidar of one tick rasterise the map once."""
    key = (float(ego.x), float(ego.y), float(ego.yaw))
    for cached_map, cached_key, raster in _RASTER_CACHE:
        if cached_map is vmap and cached_key == key:
            return raster
    raster = _rasterise(vmap, *key)
    _RASTER_CACHE.insert(0, (vmap, key, raster))
    del _RASTER_CACHE[2:]
    return raster


def _rasterise(vmap: VectorMap, x: float, y: float, yaw: float) -> GroundRaster:

    T_global_from_ego = pose_to_transform(x, y, 0.0, yaw)
    layers = vmap.semantic_layers_in_ego(T_global_from_ego, RASTER_RADIUS_M,
                                         ("walkway", "drivable_area", "lane", "crosswalk", "lane_divider"))
    size = int(round(2 * RASTER_RADIUS_M / RASTER_RES_M))
    raster = GroundRaster(np.full((size, size), LABEL_TERRAIN, np.uint8), RASTER_RADIUS_M, RASTER_RES_M, (x, y, yaw))
    for cls, label in (("walkway", LABEL_WALKWAY), ("drivable_area", LABEL_ASPHALT), ("lane", LABEL_LANE)):
        _fill_polygons(raster, [p for g in layers[cls] for p in _parts(g, Polygon)], label)
    for g in layers["crosswalk"]:
        for poly in _parts(g, Polygon):
            _paint_crosswalk(raster, poly, (x, y, yaw))
    _paint_lines(raster, layers["lane_divider"])
    return raster


def _paint_lines(raster: GroundRaster, geoms: list) -> None:
    """Lane dividers / road edges as painted strips of `_MARKING_WIDTH_M`, filled with sub-pixel precision."""
    lines = [line for g in geoms for line in _parts(g, LineString)]
    lines += [p.exterior for g in geoms for p in _parts(g, Polygon)]
    if not lines:
        return
    strips = shapely.buffer(np.array(lines, dtype=object), _MARKING_WIDTH_M / 2, cap_style="flat")
    _fill_polygons(raster, [p for g in strips for p in _parts(g, Polygon)], LABEL_PAINT)


def _fill_polygons(raster: GroundRaster, polygons: list[Polygon], label: int) -> None:
    """Fill polygons (with holes) one by one: cv2 fills the contours of ONE call even-odd, so overlapping
    polygons passed together would cancel out."""
    import cv2

    for poly in polygons:
        cv2.fillPoly(raster.labels, [_to_fixed(raster, ring) for ring in _rings(poly)], label, cv2.LINE_8, 4)


def _parts(geom, kind: type) -> list:
    """Flatten (multi-part / collection) geometry into its parts of one shapely type."""
    if isinstance(geom, kind):
        return [geom]
    if hasattr(geom, "geoms"):
        return [p for g in geom.geoms for p in _parts(g, kind)]
    return []


def _rings(poly: Polygon) -> list[np.ndarray]:
    return [np.asarray(poly.exterior.coords)] + [np.asarray(r.coords) for r in poly.interiors]


def _to_fixed(raster: GroundRaster, xy: np.ndarray) -> np.ndarray:
    """Ego-frame vertices -> int32 raster coordinates with 4 fractional bits (cv2 `shift=4`)."""
    return np.round(raster.ego_to_pixel(xy[:, :2]) * 16).astype(np.int32)


def _paint_crosswalk(raster: GroundRaster, poly: Polygon, ego_pose: tuple[float, float, float]) -> None:
    """Zebra stripes across the crosswalk's long axis, phased in the global frame so they do not slide with the ego."""
    import cv2

    rect = np.asarray(poly.minimum_rotated_rectangle.exterior.coords) if poly.area > 0.05 else None
    if rect is None or len(rect) < 4:
        return
    edges = np.diff(rect[:3], axis=0)
    u = edges[np.argmax(detmath.norm_rows(edges))]
    u = u / detmath.norm(u)
    ex, ey, yaw = ego_pose
    sin, cos = detmath.sincos(yaw)
    ug = np.array([cos * u[0] - sin * u[1], sin * u[0] + cos * u[1]])
    if not 0.0 <= detmath.arctan2(ug[1], ug[0]) < np.pi:  # canonical direction so the phase is unique
        u, ug = -u, -ug
    contours = [_to_fixed(raster, ring) for ring in _rings(poly)]
    lo = np.floor(np.concatenate(contours).min(axis=0) / 16).astype(int)
    hi = np.ceil(np.concatenate(contours).max(axis=0) / 16).astype(int)
    size = raster.labels.shape[0]
    c0, r0 = np.clip(lo, 0, size - 1)
    c1, r1 = np.clip(hi, 0, size - 1)
    mask = np.zeros((r1 - r0 + 1, c1 - c0 + 1), np.uint8)
    cv2.fillPoly(mask, [c - np.array([c0 * 16, r0 * 16], np.int32) for c in contours], 1, cv2.LINE_8, 4)
    rows, cols = np.mgrid[r0:r1 + 1, c0:c1 + 1]
    xs = raster.radius_m - (rows + 0.5) * raster.res_m
    ys = raster.radius_m - (cols + 0.5) * raster.res_m
    phase = (xs * u[0] + ys * u[1] + ex * ug[0] + ey * ug[1]) / (2 * _CROSSWALK_STRIPE_M)
    paint = (mask > 0) & ((phase - np.floor(phase)) < 0.5)
    raster.labels[r0:r1 + 1, c0:c1 + 1][paint] = LABEL_CROSSWALK
