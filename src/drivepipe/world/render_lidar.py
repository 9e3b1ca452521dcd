"""Lidar renderer of the synthetic world: one merged 360-degree sweep, ray-cast against the ground and the actors.

Beams are spread like a Velodyne HDL-32 (elevations about -30.7 .. +10.7 deg, `cfg.lidar_beams` of them), azimuth
step `cfg.lidar_azimuth_step_deg`. Every ray is intersected with the ground plane (ego z = 0) and, through a
vectorised slab test, with each actor's oriented box inside the azimuth wedge the box covers; the nearest hit wins.
Rays that hit nothing within `cfg.lidar_max_range_m`, or land inside the ego's footprint, are dropped. Points come
out in the LIDAR frame (`rig.T_ego_from_lidar` maps them to the ego frame). Noise is seeded by the snapshot
timestamp, so a snapshot always renders to the same array.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from drivepipe.config import SyntheticConfig
from drivepipe.mapdata import VectorMap
from drivepipe.schema import LidarColumn
from drivepipe.world.ground import NUM_LABELS, ground_raster
from drivepipe.world.render_camera import actor_corners_ego
from drivepipe.world.rig import Rig
from drivepipe.world_state import WorldSnapshot

_ELEVATION_MIN_DEG, _ELEVATION_MAX_DEG = -30.67, 10.67
_RANGE_NOISE_M = 0.02            # sigma of the range noise, truncated at +-2 sigma
_INTENSITY_NOISE = 3.0           # sigma, intensity units
# Footprint of the ego (Chrysler Pacifica) in the ego frame, m. The merged cloud of nuPlan's five lidars has no
# returns from the car itself, and the four short-range lidars see the ground the roof hides from the top one, so the
# body is not an occluder here; returns inside its footprint are simply dropped.
_EGO_FOOTPRINT_X_M = (-1.0, 4.18)
_EGO_FOOTPRINT_HALF_WIDTH_M = 1.0
_LOW_BEAMS = 8                   # beams below this index near the car come from the four short-range lidars
# Reflectivity per ground label (terrain, walkway, asphalt, lane, paint, crosswalk) and per actor category.
_LABEL_INTENSITY = np.full(256, 40.0)
_LABEL_INTENSITY[:NUM_LABELS] = (40.0, 55.0, 12.0, 14.0, 170.0, 180.0)
_CATEGORY_INTENSITY = {"vehicle": 45.0, "bicycle": 35.0, "pedestrian": 25.0, "traffic_cone": 140.0,
                       "barrier": 90.0, "czone_sign": 200.0, "generic_object": 50.0}


def render_lidar(vmap: VectorMap, snapshot: WorldSnapshot, rig: Rig, cfg: SyntheticConfig) -> np.ndarray:
    """Render one merged lidar sweep.

    Args:
        vmap: vector map of the location (ground surfaces give the intensities).
        snapshot: world state; the ego rear axle sits on the ground at (ego.x, ego.y) with heading ego.yaw.
        rig: sensor rig; `rig.T_ego_from_lidar` places the sensor origin.
        cfg: beams, azimuth step (deg) and maximum range (m).

    Returns:
        (N, 6) float32 in the LIDAR frame, columns `LidarColumn`: x, y, z (m), intensity 0-255, ring (beam index,
        0 = lowest), lidar_info (0 top, 1 right, 2 left, 3 back, 4 front short-range lidar).
    """
    dirs_l, beam, azimuth = _rays(cfg.lidar_beams, cfg.lidar_azimuth_step_deg)
    n_az = azimuth.size
    R, origin = rig.T_ego_from_lidar[:3, :3], rig.T_ego_from_lidar[:3, 3]
    dirs_e = dirs_l @ R.T
    down = dirs_e[:, 2] < -1e-9
    t = np.where(down, -origin[2] / np.where(down, dirs_e[:, 2], -1.0), np.inf)
    hit = np.full(t.shape, -1, np.int64)  # -1 ground, k >= 0 actor k
    corners = actor_corners_ego(snapshot)
    for k in range(len(corners)):
        cols = _wedge_columns(corners[k], origin, R, azimuth)
        if cols is None:
            continue
        idx = (np.arange(cfg.lidar_beams)[:, None] * n_az + cols[None, :]).ravel()
        t_box = _ray_box(origin, dirs_e[idx], corners[k])
        closer = t_box < t[idx]
        t[idx[closer]] = t_box[closer]
        hit[idx[closer]] = k
    keep = t <= cfg.lidar_max_range_m
    hit_xy = origin[None, :2] + np.where(keep, t, 0.0)[:, None] * dirs_e[:, :2]
    keep &= ~((hit_xy[:, 0] > _EGO_FOOTPRINT_X_M[0]) & (hit_xy[:, 0] < _EGO_FOOTPRINT_X_M[1])
              & (np.abs(hit_xy[:, 1]) < _EGO_FOOTPRINT_HALF_WIDTH_M))
    ray_azimuth = np.tile(azimuth, cfg.lidar_beams)
    return _make_points(vmap, snapshot, (dirs_l[keep], dirs_e[keep], t[keep]), hit[keep], beam[keep],
                        ray_azimuth[keep], origin)


def _make_points(vmap: VectorMap, snapshot: WorldSnapshot, rays: tuple[np.ndarray, np.ndarray, np.ndarray],
                 hit: np.ndarray, beam: np.ndarray, azimuth_deg: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Add noise, intensities and source-lidar ids to the kept rays; (N, 6) float32 in the lidar frame.

    rays: directions in the lidar frame (N, 3), the same in the ego frame (N, 3), hit distance (N,) m.
    hit: -1 ground, k >= 0 actor k. origin: (3,) lidar origin in the ego frame.
    """
    dirs_l, dirs_e, t = rays
    rng = np.random.default_rng([int(snapshot.timestamp_us), 0x11DA])
    noise = np.clip(rng.normal(0.0, _RANGE_NOISE_M, t.size), -2 * _RANGE_NOISE_M, 2 * _RANGE_NOISE_M)
    on_ground = hit < 0
    ground_xy = origin[None, :2] + t[on_ground, None] * dirs_e[on_ground, :2]
    intensity = np.empty(t.size)
    intensity[on_ground] = _LABEL_INTENSITY[ground_raster(vmap, snapshot.ego).label_at(ground_xy)]
    actor_refl = np.array([_CATEGORY_INTENSITY.get(a.category, 50.0) for a in snapshot.actors] + [0.0])
    intensity[~on_ground] = actor_refl[hit[~on_ground]]
    intensity = np.clip(np.rint(intensity + rng.normal(0.0, _INTENSITY_NOISE, t.size)), 0, 255)
    points = np.empty((t.size, len(LidarColumn)), np.float32)
    points[:, :3] = dirs_l * (t + noise)[:, None]
    points[:, LidarColumn.INTENSITY] = intensity
    points[:, LidarColumn.RING] = beam
    points[:, LidarColumn.LIDAR_INFO] = _source_lidar(beam, azimuth_deg)
    return points


def _source_lidar(beam: np.ndarray, azimuth_deg: np.ndarray) -> np.ndarray:
    """0 (top) for most points; the lowest beams by azimuth sector: 4 front, 2 left, 3 back, 1 right."""
    az = (azimuth_deg + 180.0) % 360.0 - 180.0
    sector = np.select([np.abs(az) < 45.0, (az >= 45.0) & (az < 135.0), np.abs(az) >= 135.0], [4, 2, 3], 1)
    return np.where(beam < _LOW_BEAMS, sector, 0)


@lru_cache(maxsize=8)
def _rays(num_beams: int, step_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit ray directions in the lidar frame, beam-major: (B * A, 3), beam index (B * A,), azimuth deg (A,)."""
    elevation = np.deg2rad(np.linspace(_ELEVATION_MIN_DEG, _ELEVATION_MAX_DEG, num_beams))
    azimuth_deg = np.arange(0.0, 360.0 - 1e-9, step_deg)
    az = np.deg2rad(azimuth_deg)
    ce = np.cos(elevation)[:, None]
    dirs = np.stack([ce * np.cos(az)[None], ce * np.sin(az)[None],
                     np.broadcast_to(np.sin(elevation)[:, None], (num_beams, az.size))], axis=-1)
    beam = np.repeat(np.arange(num_beams), az.size)
    for arr in (dirs, beam, azimuth_deg):
        arr.setflags(write=False)
    return dirs.reshape(-1, 3), beam, azimuth_deg


def _wedge_columns(box: np.ndarray, origin: np.ndarray, R_ego_from_lidar: np.ndarray,
                   azimuth_deg: np.ndarray) -> np.ndarray | None:
    """Azimuth columns whose rays can hit a (8, 3) ego-frame box; None if none; all if the box surrounds us."""
    corners_l = (box - origin) @ R_ego_from_lidar
    az = np.rad2deg(np.arctan2(corners_l[:, 1], corners_l[:, 0]))
    centre = np.rad2deg(np.arctan2(corners_l[:, 1].mean(), corners_l[:, 0].mean()))
    delta = (az - centre + 180.0) % 360.0 - 180.0
    if delta.max() - delta.min() > 170.0:
        return np.arange(azimuth_deg.size)
    d = (azimuth_deg - centre + 180.0) % 360.0 - 180.0
    cols = np.nonzero((d >= delta.min()) & (d <= delta.max()))[0]
    return cols if cols.size else None


def _ray_box(origin: np.ndarray, dirs: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Entry distance of rays (origin (3,), dirs (M, 3), ego frame) into a (8, 3) corner box; inf if missed."""
    centre = box.mean(axis=0)
    ex = box[3] - box[2]  # RR -> FR: the box's forward axis
    ey = box[0] - box[3]  # FR -> FL: its left axis
    axes = np.stack([ex / np.linalg.norm(ex), ey / np.linalg.norm(ey), [0.0, 0.0, 1.0]], axis=1)
    half = np.array([np.linalg.norm(ex), np.linalg.norm(ey), box[4, 2] - box[0, 2]]) / 2
    return _slab((origin - centre) @ axes, dirs @ axes, half)


def _slab(origin_b: np.ndarray, dirs_b: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Slab test in a box's own frame (axis-aligned, centred at 0): entry distance (M,), inf for misses or rays
    starting inside the box."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dirs_b
        t1 = (-half - origin_b) * inv
        t2 = (half - origin_b) * inv
        t_near = np.minimum(t1, t2).max(axis=1)
        t_far = np.maximum(t1, t2).min(axis=1)
    ok = (t_far >= t_near) & (t_near > 0)
    return np.where(ok, t_near, np.inf)
