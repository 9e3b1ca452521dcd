"""Camera renderer of the synthetic world: physically consistent images for any ego pose, through the full lens model.

Per image: a background of sky (gradient by ray elevation) and ground (each pixel's ray, undistorted once per
calibration and cached, intersected with the plane z = 0 and coloured from a top-down texture of the map around the
ego, with distance haze), then the actors' boxes as shaded faces drawn far -> near (painter's algorithm), clipped
against the near plane and projected with the distortion model along finely subdivided edges.

Frames: ego = rear axle (x forward, y left, z up, on the ground z = 0); camera = OpenCV. The ground texture
(ground_texture.py) lies on an ego-frame raster (`GroundRaster`) shared with the lidar renderer. Everything is a
pure function of its inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from drivepipe.mapdata import VectorMap
from drivepipe.schema import CATEGORIES, CameraCalibration
from drivepipe.utils import detmath
from drivepipe.utils.geometry import box_corners_2d, global_to_ego_xy_yaw, invert
from drivepipe.world.camera_effects import HEAD_LAMP_RGB, TAIL_LAMP_RGB, face_colours, fogged, lighting, sensor_effects
from drivepipe.world.conditions import Conditions, sun_direction
from drivepipe.world.ground import GroundRaster, ground_raster
from drivepipe.world.ground_texture import ground_texture, sampled_pixels
from drivepipe.world.rig import Rig, max_valid_radius, normalized_to_pixel, pixel_to_normalized, project_points
from drivepipe.world.shapes import MATERIAL_SHADE, PAINT, Parts, actor_parts
from drivepipe.world_state import ActorState, WorldSnapshot

__all__ = ["render_cameras", "project_points", "actor_colour", "actor_corners_ego", "GroundRaster", "ground_raster"]

_Z_NEAR_M = 0.1               # near clipping plane in the camera frame
_EDGE_SUBDIVISIONS = 12       # samples per face edge so straight 3-D edges bend with the lens distortion
_MAX_ACTOR_DISTANCE_M = 90.0  # actors farther than this from the ego are not drawn (a few px at the written size)
_DETAIL_DISTANCE_M = 35.0     # farther actors are drawn as plain boxes (their parts are sub-pixel there)
_MIN_FACE_AREA_PX = 0.5       # faces whose projection is smaller than this are not drawn
_AMBIENT = 0.5                # face shade without direct sun; + 0.5 x cos(sun angle) in sunlight

_VEHICLE_PAINTS = ((225, 225, 222), (28, 29, 33), (168, 170, 176), (105, 108, 115), (158, 30, 32),
                   (38, 62, 138), (36, 78, 58), (190, 176, 140), (120, 26, 40), (210, 200, 60))
_CATEGORY_RGB = {"traffic_cone": (255, 110, 10),
                 "barrier": (225, 215, 70), "czone_sign": (250, 160, 0), "generic_object": (125, 100, 80)}
_PEDESTRIAN_CLOTHES = ((170, 70, 150), (60, 70, 120), (40, 40, 45), (150, 40, 40), (90, 120, 70), (200, 180, 150),
                       (200, 120, 30))
_SHARED_PALETTE = _VEHICLE_PAINTS + _PEDESTRIAN_CLOTHES
# Box faces as corner indices (corners 0-3 bottom FL, RL, RR, FR; 4-7 the same on top). The bottom is never seen.
_FACES = np.array([[0, 3, 7, 4], [1, 2, 6, 5], [0, 1, 5, 4], [3, 2, 6, 7], [4, 5, 6, 7]])


@dataclass(frozen=True)
class _CameraGeometry:
    """Everything about one calibration that does not depend on the scene (cached).

    maps: cv2 fixed-point remap tables (H, W) from image pixels to ground-texture pixels; ray_z: (H, W) z of each
    pixel's unit ray (ego frame); ground_dist: (H, W) m along the ray to the ground (inf for sky); ground_xy:
    (H, W, 2) ego-frame ground hit. `camera_effects.lighting` turns these into the per-condition gain / base.
    """

    key: tuple
    maps: tuple[np.ndarray, np.ndarray]
    ray_z: np.ndarray
    ground_dist: np.ndarray
    ground_xy: np.ndarray
    T_cam_from_ego: np.ndarray
    cam_pos_ego: np.ndarray
    r_max: float
    bounds: tuple[float, float, float, float]  # xmin, xmax, ymin, ymax of the image in normalised coordinates


_GEOMETRY_CACHE: dict[tuple, _CameraGeometry] = {}


def render_cameras(vmap: VectorMap, snapshot: WorldSnapshot, rig: Rig,
                   channels: Sequence[str]) -> dict[str, np.ndarray]:
    """Render the requested cameras of `rig` for the world state `snapshot`.

    Args:
        vmap: vector map of the location (global UTM frame).
        snapshot: world state; the ego rear axle sits on the ground at (ego.x, ego.y) with heading ego.yaw
            (flat world: ego.z is ignored).
        rig: sensor rig; each channel must be in `rig.cameras`.
        channels: channel names to render.

    Returns:
        channel -> (H, W, 3) uint8 RGB image as captured through the distorted lens. Deterministic. The map raster
        and ground texture are built once per call (and the raster reused by `render_lidar` at the same pose), so
        render all channels of a tick in one call.
    """
    raster = ground_raster(vmap, snapshot.ego)
    corners = actor_corners_ego(snapshot)
    near = detmath.hypot(*corners[:, :4, :2].mean(axis=1).T) < raster.radius_m + 10.0 if len(corners) else []
    geoms = []
    for channel in channels:
        if channel not in rig.cameras:
            raise ValueError(f"unknown camera channel {channel!r}; rig has {sorted(rig.cameras)}")
        geoms.append(_camera_geometry(rig.cameras[channel], raster.radius_m, raster.res_m))
    pixels = sampled_pixels(tuple(g.key for g in geoms), [g.maps[0] for g in geoms], raster.labels.shape[0])
    texture = ground_texture(raster, corners[near] if len(corners) else corners, pixels)
    parts = actor_parts(snapshot, _MAX_ACTOR_DISTANCE_M, _DETAIL_DISTANCE_M)
    colours = _part_colours(snapshot, parts)
    c, s = detmath.cos(-snapshot.ego.yaw), detmath.sin(-snapshot.ego.yaw)
    sun = sun_direction(snapshot.conditions)
    sun_ego = np.array([c * sun[0] - s * sun[1], s * sun[0] + c * sun[1], sun[2]])
    out = {}
    for channel, geom in zip(channels, geoms):
        image = _background(geom, texture, snapshot.conditions)
        _draw_parts(image, geom, rig.cameras[channel], parts, colours, sun_ego, snapshot)
        out[channel] = sensor_effects(image, snapshot.conditions, snapshot.timestamp_us, channel)
    return out


def _part_colours(snapshot: WorldSnapshot, parts: Parts) -> np.ndarray:
    """(P, 3) base RGB of every part: its owner's colour times the material's shade."""
    base = np.array([actor_colour(a.category, a.track_id) for a in snapshot.actors], np.float64).reshape(-1, 3)
    return base[parts.owner] * MATERIAL_SHADE[parts.material][:, None]


def actor_colour(category: str, track_id: int) -> tuple[int, int, int]:
    """Base RGB of an actor: a pure function of (category, track_id) (a hash, no random state). Vehicles,
    pedestrians and bicycles draw from one shared palette; road furniture keeps its signal colours."""
    category_index = CATEGORIES.index(category) if category in CATEGORIES else len(CATEGORIES)
    h = (int(track_id) * 2654435761 + category_index * 40503 + 12345) & 0xFFFFFFFF
    h ^= h >> 15
    h = (h * 2246822519) & 0xFFFFFFFF
    if category in ("vehicle", "pedestrian", "bicycle"):  # one palette for all road users: colour is no class cue
        base = _SHARED_PALETTE[h % len(_SHARED_PALETTE)]
    else:
        base = _CATEGORY_RGB.get(category, _CATEGORY_RGB["generic_object"])
    shade = 0.85 + 0.25 * ((h >> 8) & 0xFF) / 255.0
    return tuple(int(min(255, round(v * shade))) for v in base)  # type: ignore[return-value]


def actor_corners_ego(snapshot: WorldSnapshot) -> np.ndarray:
    """(K, 8, 3) box corners of all actors in the ego frame (0-3 bottom FL, RL, RR, FR; 4-7 top), m."""
    actors: tuple[ActorState, ...] = snapshot.actors
    if not actors:
        return np.zeros((0, 8, 3))
    ego = snapshot.ego
    xy = np.array([[a.x, a.y] for a in actors], np.float64)
    yaw = np.array([a.yaw for a in actors], np.float64)
    xy_e, yaw_e = global_to_ego_xy_yaw(xy, yaw, ego.x, ego.y, ego.yaw)
    foot = box_corners_2d(xy_e, np.array([a.length for a in actors]), np.array([a.width for a in actors]),
                          np.asarray(yaw_e))  # (K, 4, 2)
    z_lo = np.array([a.z - a.height / 2 for a in actors])
    z_hi = np.array([a.z + a.height / 2 for a in actors])
    corners = np.zeros((len(actors), 8, 3))
    corners[:, :4, :2] = foot
    corners[:, 4:, :2] = foot
    corners[:, :4, 2] = z_lo[:, None]
    corners[:, 4:, 2] = z_hi[:, None]
    return corners


# ------------------------------------------------------------------------------------------------- background
def _background(geom: _CameraGeometry, texture: np.ndarray, cond: Conditions) -> np.ndarray:
    """Sky plus lit, hazy textured ground for one camera under `cond`, (H, W, 3) uint8."""
    import cv2

    gain, base = lighting(geom.key, geom.ray_z, geom.ground_dist, geom.ground_xy, cond)
    ground = cv2.remap(texture, geom.maps[0], geom.maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    image = ground.astype(np.float32)
    image *= gain
    image += base
    return np.clip(image, 0, 255).astype(np.uint8)


def _calibration_key(calib: CameraCalibration, radius_m: float, res_m: float) -> tuple:
    return (calib.width, calib.height, calib.intrinsic.tobytes(), calib.distortion.tobytes(),
            calib.T_ego_from_cam.tobytes(), radius_m, res_m)


def _camera_geometry(calib: CameraCalibration, radius_m: float, res_m: float) -> _CameraGeometry:
    """Per-pixel rays of a calibration and their ground-texture lookup, built once and cached."""
    key = _calibration_key(calib, radius_m, res_m)
    if key in _GEOMETRY_CACHE:
        return _GEOMETRY_CACHE[key]
    import cv2

    h, w = calib.height, calib.width
    uu, vv = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    norm = pixel_to_normalized(calib, np.stack([uu.ravel(), vv.ravel()], axis=1))
    rays_cam = np.concatenate([norm, np.ones((norm.shape[0], 1))], axis=1)
    rays_cam /= detmath.norm_rows(rays_cam)[:, None]
    R, origin = calib.T_ego_from_cam[:3, :3], calib.T_ego_from_cam[:3, 3]
    rays = detmath.rotate(rays_cam, R)  # (H * W, 3) unit rays in the ego frame
    is_ground = rays[:, 2] < -1e-6
    t = np.where(is_ground, -origin[2] / np.where(is_ground, rays[:, 2], -1.0), 1e5)
    hit = origin[None, :2] + t[:, None] * rays[:, :2]
    size = int(round(2 * radius_m / res_m))
    col = np.clip((radius_m - hit[:, 1]) / res_m - 0.5, 0, size - 1).astype(np.float32).reshape(h, w)
    row = np.clip((radius_m - hit[:, 0]) / res_m - 0.5, 0, size - 1).astype(np.float32).reshape(h, w)
    geom = _CameraGeometry(
        key=key, maps=cv2.convertMaps(col, row, cv2.CV_16SC2), ray_z=rays[:, 2].reshape(h, w),
        ground_dist=np.where(is_ground, t, np.inf).reshape(h, w), ground_xy=hit.reshape(h, w, 2),
        T_cam_from_ego=invert(calib.T_ego_from_cam), cam_pos_ego=origin.copy(),
        r_max=max_valid_radius(tuple(calib.distortion)),
        bounds=(float(norm[:, 0].min()), float(norm[:, 0].max()), float(norm[:, 1].min()), float(norm[:, 1].max())))
    if len(_GEOMETRY_CACHE) > 64:
        _GEOMETRY_CACHE.clear()
    _GEOMETRY_CACHE[key] = geom
    return geom


# ----------------------------------------------------------------------------------------------------- actors
def _draw_parts(image: np.ndarray, geom: _CameraGeometry, calib: CameraCalibration, parts: Parts,
                colours: np.ndarray, sun_ego: np.ndarray, snapshot: WorldSnapshot) -> None:
    """Paint the visible faces of all part boxes into `image` (in place), far -> near; culling and shading are
    vectorised, only visible faces reach the polygon filler."""
    import cv2

    if not len(parts.owner):
        return
    T, cond = geom.T_cam_from_ego, snapshot.conditions
    box_cam = detmath.rotate(parts.corners, T[:3, :3]) + T[:3, 3]
    in_view = ~_outside_view(box_cam, geom)
    faces = parts.corners[:, _FACES]                          # (P, 5, 4, 3) ego frame
    face_centre = faces.mean(axis=2)
    normal = face_centre - parts.corners.mean(axis=1)[:, None]
    normal /= np.maximum(detmath.norm_rows(normal)[..., None], 1e-9)
    to_face = face_centre - geom.cam_pos_ego
    p, f = np.nonzero(in_view[:, None] & (detmath.dot(normal, to_face) < 0))
    if not p.size:
        return
    dist = detmath.norm_rows(to_face[p, f])
    sun_up = max(0.0, float(np.sign(sun_ego[2])))
    shade = _AMBIENT + 0.5 * sun_up * np.maximum(0.0, detmath.dot(normal[p, f], sun_ego))
    rgb = face_colours(colours[p], shade, dist, cond)
    if cond.headlights:
        rgb = _lamps(rgb, p, f, dist, parts, snapshot)
    polys = box_cam[p[:, None], _FACES[f]]                    # (K, 4, 3) camera frame
    front = (polys[..., 2] >= _Z_NEAR_M).all(axis=1)
    outlines: dict[int, np.ndarray] = {}  # face -> (V, 2) int32 fixed-point (1/16 px) outline
    if front.any():
        uv = _project_polygons(polys[front], geom, calib)     # (F, 4 n, 2)
        idx = np.flatnonzero(front)
        big = _area(uv) >= _MIN_FACE_AREA_PX
        outlines.update(zip(idx[big].tolist(), np.round(uv[big] * 16).astype(np.int32)))
    clipped: dict[int, list[tuple[int, np.ndarray]]] = {}  # near-clipped faces grouped by vertex count
    for k in np.flatnonzero(~front).tolist():
        poly = _clip_near(polys[k])
        if len(poly) >= 3:
            clipped.setdefault(len(poly), []).append((k, poly))
    for group in clipped.values():  # one projection per group (per-point arithmetic: the same as one by one)
        uv = _project_polygons(np.stack([poly for _, poly in group]), geom, calib)
        outlines.update(zip([k for k, _ in group], np.round(uv * 16).astype(np.int32)))
    colour = np.clip(rgb, 0, 255).tolist()
    for k in np.argsort(-dist, kind="stable").tolist():
        if k in outlines:
            cv2.fillPoly(image, [outlines[k]], tuple(colour[k]), cv2.LINE_AA, 4)


def _area(uv: np.ndarray) -> np.ndarray:
    """(F,) shoelace area (px^2) of (F, V, 2) outlines."""
    x, y = uv[..., 0], uv[..., 1]
    return 0.5 * np.abs((x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(axis=1))


def _lamps(rgb: np.ndarray, p: np.ndarray, f: np.ndarray, dist: np.ndarray, parts: Parts,
           snapshot: WorldSnapshot) -> np.ndarray:
    """Head lamps (front faces) and tail lamps (rear faces) on the painted bodies of moving vehicles."""
    moving = np.array([a.category == "vehicle" and detmath.hypot(a.vx, a.vy) > 0.1 for a in snapshot.actors])
    lit = moving[parts.owner[p]] & (parts.material[p] == PAINT)
    out = rgb.copy()
    for face, lamp in ((0, HEAD_LAMP_RGB), (1, TAIL_LAMP_RGB)):
        sel = lit & (f == face)
        out[sel] = fogged(np.tile(lamp, (int(sel.sum()), 1)), dist[sel], snapshot.conditions)
    return out


def _outside_view(box_cam: np.ndarray, geom: _CameraGeometry) -> np.ndarray:
    """(P,) conservative test on (P, 8, 3) camera-frame boxes: True when a box is certainly not in the image."""
    z = box_cam[..., 2]
    behind, partly = (z < _Z_NEAR_M).all(axis=1), (z < _Z_NEAR_M).any(axis=1)
    safe = np.where(z < _Z_NEAR_M, 1.0, z)
    xn, yn = box_cam[..., 0] / safe, box_cam[..., 1] / safe
    xmin, xmax, ymin, ymax = geom.bounds
    off = (xn < xmin).all(axis=1) | (xn > xmax).all(axis=1) | (yn < ymin).all(axis=1) | (yn > ymax).all(axis=1)
    return behind | (~partly & off)


def _clip_near(poly: np.ndarray) -> np.ndarray:
    """Clip a (V, 3) camera-frame polygon to z >= the near plane (Sutherland-Hodgman, one plane)."""
    inside = poly[:, 2] >= _Z_NEAR_M
    if inside.all():
        return poly
    out = []
    n = len(poly)
    for i in range(n):
        cur, nxt = poly[i], poly[(i + 1) % n]
        if inside[i]:
            out.append(cur)
        if inside[i] != inside[(i + 1) % n]:
            t = (_Z_NEAR_M - cur[2]) / (nxt[2] - cur[2])
            out.append(cur + t * (nxt - cur))
    return np.array(out).reshape(-1, 3)


def _project_polygons(polys: np.ndarray, geom: _CameraGeometry, calib: CameraCalibration) -> np.ndarray:
    """(F, V, 3) camera-frame polygons (z >= near) -> (F, V * n, 2) distorted pixel outlines along subdivided edges.

    Directions beyond the lens model's valid radius are pulled radially onto it, which keeps them outside the
    image instead of letting the folding polynomial bring them back in.
    """
    steps = np.arange(_EDGE_SUBDIVISIONS)[None, None, :, None] / _EDGE_SUBDIVISIONS
    nxt = np.roll(polys, -1, axis=1)
    pts = (polys[:, :, None, :] + steps * (nxt - polys)[:, :, None, :]).reshape(-1, 3)
    xn, yn = pts[:, 0] / pts[:, 2], pts[:, 1] / pts[:, 2]
    r = detmath.hypot(xn, yn)
    scale = np.minimum(1.0, geom.r_max / np.maximum(r, 1e-12))
    return normalized_to_pixel(calib, xn * scale, yn * scale).reshape(len(polys), -1, 2)
