"""BEV rasters (map segmentation, agent occupancy) and planar transforms of boxes / trajectories.

Grid convention (`drivepipe.sample`): a square of half-side E = bev_size * res / 2 centred on the rear axle; array
axis -2 runs along ego +x, axis -1 along ego +y; cell (i, j) has its centre at x = -E + (i + 0.5) res,
y = -E + (j + 0.5) res. OpenCV draws at (column, row) = (j, i), so ego (x, y) maps to cv2 point
((y + E) / res - 0.5, (x + E) / res - 0.5); sub-pixel precision comes from cv2's `shift` argument.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from drivepipe.utils import detmath
from drivepipe.utils.geometry import wrap_angle

_SHIFT = 4  # cv2 fixed-point fractional bits (1/16 px)
LINE_WIDTH_M = 0.3  # drawn width of line classes (lane_divider)
LINE_CLASSES = ("lane_divider",)


def ego_xy_to_pixels(xy_N2: np.ndarray, bev_size: int, resolution_m: float) -> np.ndarray:
    """Ego (x, y) in m -> cv2 fixed-point (column, row) int32 points (N, 2) for drawing with `shift=_SHIFT`."""
    extent = bev_size * resolution_m / 2.0
    xy = np.asarray(xy_N2, dtype=np.float64)
    col = (xy[:, 1] + extent) / resolution_m - 0.5
    row = (xy[:, 0] + extent) / resolution_m - 0.5
    return np.round(np.stack([col, row], axis=1) * (1 << _SHIFT)).astype(np.int32)


# shapely type ids: 1 LineString, 2 LinearRing, 3 Polygon, >= 4 MultiPoint / MultiLineString / MultiPolygon /
# GeometryCollection
_POLYGON_TYPE_ID = 3
_FIRST_MULTI_TYPE_ID = 4


def _single_parts(geoms: list[Any], labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every single-part geometry inside `geoms` (multi-geometries and collections opened, recursively), with the
    label of the geometry it came from (default: its index in `geoms`)."""
    import shapely

    parts = np.empty(len(geoms), dtype=object)
    parts[:] = geoms
    labels = np.arange(len(geoms)) if labels is None else np.asarray(labels)
    while len(parts) and (shapely.get_type_id(parts) >= _FIRST_MULTI_TYPE_ID).any():
        parts, which = shapely.get_parts(parts, return_index=True)
        labels = labels[which]
    return parts, labels


def _pixel_rings(rings: np.ndarray, bev_size: int, resolution_m: float) -> list[np.ndarray]:
    """cv2 fixed-point pixel arrays of line / ring geometries, all converted in one pass."""
    import shapely

    if len(rings) == 0:
        return []
    xy, which = shapely.get_coordinates(rings, return_index=True)
    px = ego_xy_to_pixels(xy, bev_size, resolution_m)
    return np.split(px, np.cumsum(np.bincount(which, minlength=len(rings)))[:-1])


def _fill(seg_CSS: np.ndarray, geoms: list[Any], channel: np.ndarray, resolution_m: float) -> None:
    """Fill the polygons of geoms[k] into seg_CSS[channel[k]] (holes stay empty; cells touched by an edge are
    filled, i.e. up to half a cell of dilation); non-polygon parts are ignored. One shapely pass for all."""
    import cv2
    import shapely

    size = seg_CSS.shape[-1]
    parts, labels = _single_parts(geoms, channel)
    is_poly = shapely.get_type_id(parts) == _POLYGON_TYPE_ID
    polys, labels = parts[is_poly], labels[is_poly]
    holed = shapely.get_num_interior_rings(polys) > 0
    plain = np.flatnonzero(~holed)
    for k, outer in zip(plain, _pixel_rings(shapely.get_exterior_ring(polys[plain]), size, resolution_m)):
        cv2.fillPoly(seg_CSS[labels[k]], [outer], 1, lineType=cv2.LINE_8, shift=_SHIFT)  # one call each: overlaps
    for k in np.flatnonzero(holed):
        outer, *holes = _pixel_rings(shapely.get_rings(polys[k]), size, resolution_m)  # exterior first
        mask = np.zeros_like(seg_CSS[labels[k]])  # holes must not erase other polygons already drawn
        cv2.fillPoly(mask, [outer], 1, lineType=cv2.LINE_8, shift=_SHIFT)
        cv2.fillPoly(mask, holes, 0, lineType=cv2.LINE_8, shift=_SHIFT)
        seg_CSS[labels[k]] |= mask


def fill_polygons(canvas_SS: np.ndarray, geoms: list[Any], resolution_m: float) -> None:
    """Fill shapely (multi)polygons into a (S, S) uint8 canvas in place (holes stay empty; cells touched by an edge
    are filled, i.e. up to half a cell of dilation). Non-polygon parts are ignored."""
    _fill(canvas_SS[None], geoms, np.zeros(len(geoms), np.int64), resolution_m)


def draw_lines(canvas_SS: np.ndarray, geoms: list[Any], resolution_m: float, width_m: float = LINE_WIDTH_M) -> None:
    """Draw the lines (and polygon outlines) of shapely geometries into a (S, S) uint8 canvas, ~width_m wide."""
    import cv2
    import shapely

    size = canvas_SS.shape[0]
    thickness = max(1, int(round(width_m / resolution_m)))
    parts, _ = _single_parts(geoms)
    kind = shapely.get_type_id(parts)
    polys = parts[kind == _POLYGON_TYPE_ID]
    rings = np.concatenate([parts[(kind == 1) | (kind == 2)],
                            shapely.get_rings(polys) if len(polys) else np.zeros(0, object)])
    lines = [c for c in _pixel_rings(rings, size, resolution_m) if len(c) >= 2]
    if lines:
        cv2.polylines(canvas_SS, lines, False, 1, thickness=thickness, lineType=cv2.LINE_8, shift=_SHIFT)


def rasterize_map(map_layers: dict[str, list[Any]], classes: list[str], bev_size: int, resolution_m: float
                  ) -> np.ndarray:
    """Semantic map raster.

    Args:
        map_layers: class name -> shapely geometries in the ego frame (m), e.g. `Annotations.map_layers`.
        classes: output channel order (preprocess.seg_classes); line classes are drawn, others filled.

    Returns:
        seg (C, S, S) uint8 in {0, 1}.
    """
    seg = np.zeros((len(classes), bev_size, bev_size), dtype=np.uint8)
    filled = [(c, g) for c, name in enumerate(classes) if name not in LINE_CLASSES for g in map_layers.get(name, [])]
    if filled:
        _fill(seg, [g for _, g in filled], np.array([c for c, _ in filled]), resolution_m)
    for c, name in enumerate(classes):
        if name in LINE_CLASSES and map_layers.get(name):
            draw_lines(seg[c], map_layers[name], resolution_m)
    return seg


def fill_boxes(canvas_SS: np.ndarray, xy_N2: np.ndarray, yaw_N: np.ndarray, length_N: np.ndarray,
               width_N: np.ndarray, resolution_m: float) -> None:
    """Set the cells whose centre lies inside an oriented box footprint (ego frame, m / rad); in place.

    Exact centre-in-box test (cv2.fillPoly dilates by up to half a cell, too coarse for occupancy targets).
    """
    _fill_boxes(canvas_SS[None], np.zeros(len(np.reshape(yaw_N, -1)), np.int64), xy_N2, yaw_N, length_N, width_N,
                resolution_m)


def _fill_boxes(canvas_CSS: np.ndarray, channel_N: np.ndarray, xy_N2: np.ndarray, yaw_N: np.ndarray,
                length_N: np.ndarray, width_N: np.ndarray, resolution_m: float) -> None:
    """`fill_boxes` of box n into canvas_CSS[channel_N[n]], all boxes at once on a K x K window of cells around each
    box centre (K covers the largest box's circumcircle)."""
    size = canvas_CSS.shape[-1]
    extent = size * resolution_m / 2.0
    xy, yaw = np.asarray(xy_N2, np.float64).reshape(-1, 2), np.asarray(yaw_N, np.float64).reshape(-1)
    half_l, half_w = np.asarray(length_N, np.float64) / 2, np.asarray(width_N, np.float64) / 2
    radius = detmath.hypot(half_l, half_w)
    near = np.all(np.abs(xy) <= extent + radius[:, None], axis=1)  # boxes that can touch the grid at all
    if not near.any():
        return
    xy, yaw, half_l, half_w, radius = xy[near], yaw[near], half_l[near], half_w[near], radius[near]
    channel = np.asarray(channel_N, np.int64)[near]
    lo = np.floor((xy - radius[:, None] + extent) / resolution_m).astype(np.int64)  # (N, 2) first cell row / col
    k = int(np.ceil(2 * radius.max() / resolution_m)) + 2
    cells = lo[:, :, None] + np.arange(k)  # (N, 2, K) cell indices along x (rows) and y (columns)
    centers = -extent + (cells + 0.5) * resolution_m
    dx = (centers[:, 0] - xy[:, 0:1])[:, :, None]  # (N, K, 1)
    dy = (centers[:, 1] - xy[:, 1:2])[:, None, :]  # (N, 1, K)
    c, s = detmath.cos(yaw)[:, None, None], detmath.sin(yaw)[:, None, None]
    inside = (np.abs(c * dx + s * dy) <= half_l[:, None, None]) & (np.abs(c * dy - s * dx) <= half_w[:, None, None])
    on_grid = (cells >= 0) & (cells < size)
    inside &= on_grid[:, 0, :, None] & on_grid[:, 1, None, :]
    n, i, j = np.nonzero(inside)
    canvas_CSS[channel[n], cells[n, 0, i], cells[n, 1, j]] = 1


def rasterize_occupancy(now_xyyaw_A3: np.ndarray, size_A2: np.ndarray, future_A_T3: np.ndarray,
                        future_valid_AT: np.ndarray, future_steps: int, bev_size: int, resolution_m: float
                        ) -> np.ndarray:
    """Agent occupancy now and at `future_steps` future steps.

    Args:
        now_xyyaw_A3: (A, 3) current agent poses (x, y in m, yaw in rad), ego frame.
        size_A2: (A, 2) box length, width in m.
        future_A_T3: (A, Tf, 3) future poses at traj_dt_s, 2 traj_dt_s, ...; future_valid_AT: (A, Tf) bool.

    Returns:
        occ (1 + future_steps, S, S) uint8 in {0, 1}; channel k > 0 uses future row k - 1 (invalid rows skipped).
    """
    occ = np.zeros((1 + future_steps, bev_size, bev_size), dtype=np.uint8)
    if len(now_xyyaw_A3) == 0:
        return occ
    steps = min(future_steps, future_A_T3.shape[1])
    ok = np.asarray(future_valid_AT[:, :steps], bool)  # (A, steps)
    t, a = np.nonzero(ok.T)  # valid future poses (step, agent), step-major
    poses = np.concatenate([now_xyyaw_A3, future_A_T3[a, t]])
    agent = np.concatenate([np.arange(len(now_xyyaw_A3)), a])
    channel = np.concatenate([np.zeros(len(now_xyyaw_A3), np.int64), t + 1])
    _fill_boxes(occ, channel, poses[:, :2], poses[:, 2], size_A2[agent, 0], size_A2[agent, 1], resolution_m)
    return occ


def transform_trajectory(traj_N3: np.ndarray, T_dst_from_src: np.ndarray) -> np.ndarray:
    """Planar poses (..., 3) = (x, y, yaw) in frame src -> frame dst with a (4, 4) rigid transform (yaw wrapped)."""
    traj = np.asarray(traj_N3, dtype=np.float64)
    R, t = T_dst_from_src[:2, :2], T_dst_from_src[:2, 3]
    out = np.empty_like(traj)
    out[..., :2] = detmath.rotate(traj[..., :2], R) + t
    out[..., 2] = wrap_angle(traj[..., 2] + detmath.arctan2(R[1, 0], R[0, 0]))
    return out


def transform_boxes(boxes_M9: np.ndarray, T_dst_from_src: np.ndarray) -> np.ndarray:
    """Boxes (M, 9) = x, y, z, l, w, h, yaw, vx, vy in frame src -> frame dst (rigid, z-rotation assumed)."""
    b = np.asarray(boxes_M9, dtype=np.float64)
    out = b.copy()
    out[:, :3] = detmath.rotate(b[:, :3], T_dst_from_src[:3, :3]) + T_dst_from_src[:3, 3]
    out[:, 6] = wrap_angle(b[:, 6] + detmath.arctan2(T_dst_from_src[1, 0], T_dst_from_src[0, 0]))
    out[:, 7:9] = detmath.rotate(b[:, 7:9], T_dst_from_src[:2, :2])
    return out.astype(boxes_M9.dtype if isinstance(boxes_M9, np.ndarray) else np.float64)
