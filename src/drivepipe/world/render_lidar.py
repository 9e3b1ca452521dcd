"""Lidar renderer of the synthetic world: one merged 360-degree sweep, ray-cast against the ground and the actors.

Beams are spread like a Velodyne HDL-32 (elevations about -30.7 .. +10.7 deg, `cfg.lidar_beams` of them), azimuth
step `cfg.lidar_azimuth_step_deg`. Every ray is intersected with the ground plane (ego z = 0) and, through a
vectorised slab test, with the part boxes of every actor (`drivepipe.world.shapes`) inside the azimuth wedge and
elevation band each covers; the nearest hit wins. Intensity = per-instance reflectivity (shared ranges across
classes) x material x incidence and range falloff; the log's conditions add range noise, dropout, rain/fog
extinction and spurious near returns.
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
from drivepipe.utils import detmath
from drivepipe.world.ground import NUM_LABELS, ground_raster
from drivepipe.world.rig import Rig
from drivepipe.world.shapes import MATERIAL_REFLECT, Parts, actor_parts
from drivepipe.world_state import WorldSnapshot

_ELEVATION_MIN_DEG, _ELEVATION_MAX_DEG = -30.67, 10.67
_INTENSITY_NOISE = 3.0           # sigma, intensity units
# Footprint of the ego (Chrysler Pacifica) in the ego frame, m. The merged cloud of nuPlan's five lidars has no
# returns from the car itself, and the four short-range lidars see the ground the roof hides from the top one, so the
# body is not an occluder here; returns inside its footprint are simply dropped.
_EGO_FOOTPRINT_X_M = (-1.0, 4.18)
_EGO_FOOTPRINT_HALF_WIDTH_M = 1.0
_LOW_BEAMS = 8                   # beams below this index near the car come from the four short-range lidars
# Reflectivity per ground label (terrain, walkway, asphalt, lane, paint, crosswalk); actors: per instance.
_LABEL_INTENSITY = np.full(256, 40.0)
_LABEL_INTENSITY[:NUM_LABELS] = (40.0, 55.0, 12.0, 14.0, 170.0, 180.0)
_REFLECTIVITY_RANGE = {"traffic_cone": (60.0, 200.0), "barrier": (40.0, 170.0), "czone_sign": (80.0, 230.0)}
_FALLOFF_RANGE_M = 80.0          # returned intensity falls as 1 / (1 + (range / this)^2)


def render_lidar(vmap: VectorMap, snapshot: WorldSnapshot, rig: Rig, cfg: SyntheticConfig) -> np.ndarray:
    """Render one merged lidar sweep.

    Args:
        vmap: vector map of the location (ground surfaces give the intensities).
        snapshot: world state; the ego rear axle sits on the ground at (ego.x, ego.y) with heading ego.yaw;
            `snapshot.conditions` sets range noise, dropout, fog attenuation and spurious returns.
        rig: sensor rig; `rig.T_ego_from_lidar` places the sensor origin.
        cfg: beams, azimuth step (deg) and maximum range (m).

    Returns:
        (N, 6) float32 in the LIDAR frame, columns `LidarColumn`: x, y, z (m), intensity 0-255, ring (beam index,
        0 = lowest), lidar_info (0 top, 1 right, 2 left, 3 back, 4 front short-range lidar).
    """
    dirs_l, beam, azimuth = _rays(cfg.lidar_beams, cfg.lidar_azimuth_step_deg)
    R, origin = rig.T_ego_from_lidar[:3, :3], rig.T_ego_from_lidar[:3, 3]
    dirs_e = detmath.rotate(dirs_l, R)
    down = dirs_e[:, 2] < -1e-9
    t = np.where(down, -origin[2] / np.where(down, dirs_e[:, 2], -1.0), np.inf)
    hit = np.full(t.shape, -1, np.int64)  # -1 ground, k >= 0 part k
    cos_in = np.abs(dirs_e[:, 2])          # |cos| of the incidence angle (ground normal = z)
    parts = actor_parts(snapshot, cfg.lidar_max_range_m + 15.0)
    if len(parts.owner):
        ray, part, t_part, cos_part = _nearest_per_ray(*_cast_parts(origin, R, dirs_l, parts.corners, cfg))
        closer = t_part < t[ray]
        t[ray[closer]], hit[ray[closer]], cos_in[ray[closer]] = t_part[closer], part[closer], cos_part[closer]
    keep = t <= cfg.lidar_max_range_m
    hit_xy = origin[None, :2] + np.where(keep, t, 0.0)[:, None] * dirs_e[:, :2]
    keep &= ~((hit_xy[:, 0] > _EGO_FOOTPRINT_X_M[0]) & (hit_xy[:, 0] < _EGO_FOOTPRINT_X_M[1])
              & (np.abs(hit_xy[:, 1]) < _EGO_FOOTPRINT_HALF_WIDTH_M))
    ray_azimuth = np.tile(azimuth, cfg.lidar_beams)
    idx = np.flatnonzero(keep)
    return _make_points(vmap, snapshot, parts, (dirs_l, dirs_e, t, cos_in), idx, hit[idx], beam, ray_azimuth,
                        origin)


def _cast_parts(origin: np.ndarray, R: np.ndarray, dirs_l: np.ndarray, corners: np.ndarray, cfg: SyntheticConfig
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Intersect the rays that can reach each part box (its azimuth wedge x its elevation band) with it, all parts
    at once. Returns ray index, part index, entry distance (m, finite) and |cos| of the incidence angle per hit."""
    n_az = _rays(cfg.lidar_beams, cfg.lidar_azimuth_step_deg)[2].size
    step = cfg.lidar_azimuth_step_deg
    box_l = detmath.rotate(corners - origin, R.T)  # (P, 8, 3) in the lidar frame
    col_lo, n_col = _azimuth_ranges(box_l, step, n_az)
    beam_lo, n_beam = _elevation_ranges(box_l, cfg.lidar_beams)
    n_col = np.where(n_beam > 0, n_col, 0)
    part_c = np.repeat(np.arange(len(box_l)), n_col)
    col = (col_lo[part_c] + _ramp(n_col)) % n_az
    part = np.repeat(part_c, n_beam[part_c])
    b = beam_lo[part] + _ramp(n_beam[part_c])
    ray = b * n_az + np.repeat(col, n_beam[part_c])
    centre = box_l.mean(axis=1)
    ex, ey = box_l[:, 3] - box_l[:, 2], box_l[:, 0] - box_l[:, 3]
    lx, ly = detmath.norm_rows(ex), detmath.norm_rows(ey)
    axes = np.stack([ex / lx[:, None], ey / ly[:, None], np.broadcast_to([0.0, 0.0, 1.0], ex.shape)], axis=2)
    half = np.stack([lx, ly, box_l[:, 4, 2] - box_l[:, 0, 2]], axis=1) / 2
    o_b = np.stack([detmath.dot(-centre, axes[:, :, j]) for j in range(3)], axis=1)
    d_b = np.stack([detmath.dot(dirs_l[ray], axes[part][:, :, j]) for j in range(3)], axis=1)
    t_near, cos_in = _slab(o_b[part], d_b, half[part])
    ok = np.isfinite(t_near)
    return ray[ok], part[ok], t_near[ok], cos_in[ok]


def _nearest_per_ray(ray: np.ndarray, part: np.ndarray, t: np.ndarray, cos_in: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Keep the nearest part hit of every ray."""
    order = np.lexsort((t, ray))
    ray_sorted = ray[order]
    first = order[np.concatenate([[True], ray_sorted[1:] != ray_sorted[:-1]])] if ray.size else order
    return ray[first], part[first], t[first], cos_in[first]


def _ramp(counts: np.ndarray) -> np.ndarray:
    """0..c-1 for every count c, concatenated."""
    total = int(counts.sum())
    return np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)


def _azimuth_ranges(box_l: np.ndarray, step: float, n_az: int) -> tuple[np.ndarray, np.ndarray]:
    """First azimuth column (may wrap) and number of columns whose rays can hit each (P, 8, 3) box; all columns
    when the box surrounds the sensor."""
    az = detmath.degrees(detmath.arctan2(box_l[..., 1], box_l[..., 0]))
    centre = detmath.degrees(detmath.arctan2(box_l[..., 1].mean(axis=1), box_l[..., 0].mean(axis=1)))
    delta = (az - centre[:, None] + 180.0) % 360.0 - 180.0
    lo = np.ceil((centre + delta.min(axis=1)) / step).astype(np.int64) - 1  # one spare column each side
    hi = np.floor((centre + delta.max(axis=1)) / step).astype(np.int64) + 1
    around = delta.max(axis=1) - delta.min(axis=1) > 170.0
    return np.where(around, 0, lo % n_az), np.where(around, n_az, np.clip(hi - lo + 1, 0, n_az))


def _elevation_ranges(box_l: np.ndarray, num_beams: int) -> tuple[np.ndarray, np.ndarray]:
    """First beam and number of beams whose elevation band can meet each box (conservative: the box's top and
    bottom seen from its nearest and farthest horizontal distance)."""
    foot = box_l[:, :4, :2]
    seg = np.roll(foot, -1, axis=1) - foot
    u = np.clip(detmath.dot(-foot, seg) / np.maximum(detmath.dot(seg, seg), 1e-12), 0, 1)
    r_min = detmath.norm_rows(foot + u[..., None] * seg).min(axis=1)
    inside = _contains_origin(foot)
    r_min = np.where(inside, 1e-3, r_min)
    r_max = detmath.norm_rows(foot).max(axis=1)
    z = np.stack([box_l[:, 0, 2], box_l[:, 4, 2]], axis=1)
    el = detmath.degrees(detmath.arctan2(z[:, :, None], np.stack([r_min, r_max], axis=1)[:, None, :])).reshape(len(box_l), -1)
    elevation = np.linspace(_ELEVATION_MIN_DEG, _ELEVATION_MAX_DEG, num_beams)
    lo = np.searchsorted(elevation, el.min(axis=1) - 1e-9)
    hi = np.searchsorted(elevation, el.max(axis=1) + 1e-9, side="right")
    return lo, np.maximum(hi - lo, 0)


def _contains_origin(foot: np.ndarray) -> np.ndarray:
    """(P,) whether each convex (P, 4, 2) footprint contains the sensor's (0, 0)."""
    nxt = np.roll(foot, -1, axis=1)
    cross = foot[..., 0] * nxt[..., 1] - foot[..., 1] * nxt[..., 0]
    return (cross >= 0).all(axis=1) | (cross <= 0).all(axis=1)


def _make_points(vmap: VectorMap, snapshot: WorldSnapshot, parts: Parts,
                 rays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], idx: np.ndarray, hit: np.ndarray,
                 beam: np.ndarray, azimuth_deg: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Returns of the kept rays `idx` with noise, intensities, dropout / fog loss and spurious near returns;
    (N, 6) float32 in the lidar frame.

    rays: directions in the lidar frame, the same in the ego frame, hit distance (m) and |cos| incidence, for all
    rays. hit: -1 ground, k >= 0 part k, per kept ray. origin: (3,) lidar origin in the ego frame.
    """
    dirs_l, dirs_e, t_all, cos_all = rays
    t, cos_in = t_all[idx], cos_all[idx]
    cond = snapshot.conditions
    # every random draw is made for all rays and then indexed, so a ray's noise does not depend on which other
    # rays hit something (a closed-loop re-render with a slightly different scene keeps the same per-ray draws)
    rng = np.random.default_rng([int(snapshot.timestamp_us), 0x11DA])
    n_rays, sigma = t_all.size, cond.lidar_range_noise_m
    noise = np.clip(rng.normal(0.0, sigma, n_rays)[idx], -2 * sigma, 2 * sigma)
    u_dropout, u_extinction = rng.random(n_rays)[idx], rng.random(n_rays)[idx]
    intensity_noise = rng.normal(0.0, _INTENSITY_NOISE, n_rays)[idx]
    reflect = _reflectivity(vmap, snapshot, parts, dirs_e[idx], t, hit, origin)
    intensity = reflect * (0.6 + 0.4 * cos_in) / (1.0 + (t / _FALLOFF_RANGE_M) ** 2)
    survive = u_dropout >= cond.lidar_dropout
    if cond.weather != "clear":  # two-way extinction in rain / fog: far returns are lost and dimmer
        extinction = detmath.exp(-t / (2.0 * cond.visibility_m))
        survive &= u_extinction < extinction
        intensity *= extinction
    intensity = np.clip(np.rint(intensity + intensity_noise), 0, 255)
    sel = idx[survive]
    r = (t + noise)[survive]
    # spurious returns from a stream of their own: the same rays and ranges whatever was hit, so a re-render of
    # this instant with a slightly different actor set (closed loop) reproduces them
    spur_rng = np.random.default_rng([int(snapshot.timestamp_us), 0x5B0])
    spur = spur_rng.choice(t_all.size, size=cond.lidar_spurious, replace=False) if cond.lidar_spurious else idx[:0]
    spur_r = spur_rng.uniform(1.5, 12.0, spur.size)
    sel, r = np.concatenate([sel, spur]), np.concatenate([r, spur_r])
    points = np.empty((sel.size, len(LidarColumn)), np.float32)
    points[:, :3] = dirs_l[sel] * r[:, None]
    points[:, LidarColumn.INTENSITY] = np.concatenate([intensity[survive], spur_rng.integers(0, 25, spur.size)])
    points[:, LidarColumn.RING] = beam[sel]
    points[:, LidarColumn.LIDAR_INFO] = _source_lidar(beam[sel], azimuth_deg[sel])
    return points


def _reflectivity(vmap: VectorMap, snapshot: WorldSnapshot, parts: Parts, dirs_e: np.ndarray, t: np.ndarray,
                  hit: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Surface reflectivity (0-255 scale) per return: ground label, or the owner's per-instance value times the
    part's material factor."""
    out = np.empty(t.size)
    on_ground = hit < 0
    ground_xy = origin[None, :2] + t[on_ground, None] * dirs_e[on_ground, :2]
    out[on_ground] = _LABEL_INTENSITY[ground_raster(vmap, snapshot.ego).label_at(ground_xy)]
    if len(parts.owner):
        inst = np.array([instance_reflectivity(a.category, a.track_id) for a in snapshot.actors])
        part_refl = inst[parts.owner] * MATERIAL_REFLECT[parts.material]
        out[~on_ground] = part_refl[hit[~on_ground]]
    return out


def instance_reflectivity(category: str, track_id: int) -> float:
    """Reflectivity (0-255 scale) of one actor: a hash of (category, track id) mapped into a range that vehicles,
    bicycles and pedestrians share (paint and clothing vary alike); road furniture is retro-reflective and
    brighter on average, with overlap."""
    h = (int(track_id) * 2654435761 + sum(map(ord, category)) * 97 + 0x5bd1) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 2246822519) & 0xFFFFFFFF
    u = ((h >> 8) & 0xFFFF) / 65535.0
    lo, hi = _REFLECTIVITY_RANGE.get(category, (12.0, 120.0))
    return lo + (hi - lo) * u


def _source_lidar(beam: np.ndarray, azimuth_deg: np.ndarray) -> np.ndarray:
    """0 (top) for most points; the lowest beams by azimuth sector: 4 front, 2 left, 3 back, 1 right."""
    az = (azimuth_deg + 180.0) % 360.0 - 180.0
    sector = np.select([np.abs(az) < 45.0, (az >= 45.0) & (az < 135.0), np.abs(az) >= 135.0], [4, 2, 3], 1)
    return np.where(beam < _LOW_BEAMS, sector, 0)


@lru_cache(maxsize=8)
def _rays(num_beams: int, step_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit ray directions in the lidar frame, beam-major: (B * A, 3), beam index (B * A,), azimuth deg (A,)."""
    elevation = detmath.radians(np.linspace(_ELEVATION_MIN_DEG, _ELEVATION_MAX_DEG, num_beams))
    azimuth_deg = np.arange(0.0, 360.0 - 1e-9, step_deg)
    az = detmath.radians(azimuth_deg)
    ce = detmath.cos(elevation)[:, None]
    dirs = np.stack([ce * detmath.cos(az)[None], ce * detmath.sin(az)[None],
                     np.broadcast_to(detmath.sin(elevation)[:, None], (num_beams, az.size))], axis=-1)
    beam = np.repeat(np.arange(num_beams), az.size)
    for arr in (dirs, beam, azimuth_deg):
        arr.setflags(write=False)
    return dirs.reshape(-1, 3), beam, azimuth_deg


def _slab(origin_b: np.ndarray, dirs_b: np.ndarray, half: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slab test in boxes' own frames (axis-aligned, centred at 0), row-wise: entry distance (M,) (inf for misses
    or rays starting inside the box) and |cos| of the incidence angle on the entry face."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dirs_b
        t1 = (-half - origin_b) * inv
        t2 = (half - origin_b) * inv
        t_min = np.minimum(t1, t2)
        t_near = t_min.max(axis=1)
        t_far = np.maximum(t1, t2).min(axis=1)
    ok = (t_far >= t_near) & (t_near > 0)
    face = np.argmax(t_min, axis=1)
    cos_in = np.abs(np.take_along_axis(dirs_b, face[:, None], axis=1)[:, 0])
    return np.where(ok, t_near, np.inf), cos_in
