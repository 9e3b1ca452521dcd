"""Light, weather and sensor effects of the synthetic cameras, driven by the log's `Conditions`.

- Lighting: sky colours and exposure by time of day (day, dusk, night), with the ego's headlight pool on the ground
  and other vehicles' head/tail lamps at dusk and night; faces shaded by the sun direction (ambient only at night).
- Weather: contrast loss towards a fog colour with distance (e-folding `visibility_m`), for the ground, the sky and
  the actors.
- Sensor: per-frame exposure jitter, additive noise (a cached noise bank, cropped at a per-frame offset) and
  Gaussian blur. Every random choice is seeded by (timestamp, channel), so an image is a pure function of its inputs.
"""

from __future__ import annotations

import zlib
from functools import lru_cache

import numpy as np

from drivepipe.utils import detmath
from drivepipe.world.conditions import Conditions

_SKY = {  # time of day -> (horizon RGB, zenith RGB, fog RGB), absolute 8-bit values before noise
    "day": ((200.0, 208.0, 218.0), (95.0, 140.0, 205.0), (196.0, 200.0, 206.0)),
    "dusk": ((215.0, 150.0, 105.0), (55.0, 70.0, 125.0), (150.0, 128.0, 118.0)),
    "night": ((28.0, 30.0, 42.0), (8.0, 10.0, 22.0), (34.0, 36.0, 44.0)),
}
_TINT = {"day": (1.0, 1.0, 1.0), "dusk": (1.0, 0.86, 0.72), "night": (0.85, 0.9, 1.05)}
HEAD_LAMP_RGB = np.array([255.0, 246.0, 210.0])
TAIL_LAMP_RGB = np.array([205.0, 25.0, 20.0])
_NOISE_MARGIN = 32  # px of spare noise bank around the image for per-frame offsets
_LIGHTING_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def fog_rgb(cond: Conditions) -> np.ndarray:
    """(3,) colour distant things fade to."""
    scale = cond.exposure if cond.time_of_day == "day" else 1.0
    return np.array(_SKY[cond.time_of_day][2]) * scale


def lighting(key: tuple, ray_z: np.ndarray, ground_dist: np.ndarray, ground_xy: np.ndarray, cond: Conditions
             ) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel (gain (H, W, 1), base (H, W, 3)) float32 of one camera under `cond`: image = texture * gain + base.

    ray_z: (H, W) z of the unit ray in the ego frame; ground_dist: (H, W) m to the ground hit (inf for sky);
    ground_xy: (H, W, 2) ego-frame ground hit. Cached per (camera key, conditions).
    """
    cache_key = (key, cond)
    if cache_key in _LIGHTING_CACHE:
        return _LIGHTING_CACHE[cache_key]
    horizon, zenith, _ = (np.array(c, np.float32) for c in _SKY[cond.time_of_day])
    sky_scale = cond.exposure if cond.time_of_day == "day" else 1.0
    elevation = np.clip(detmath.arcsin(np.clip(ray_z, -1, 1)) / detmath.radians(35.0), 0.0, 1.0)[..., None]
    sky = (horizon * (1 - elevation) + zenith * elevation) * sky_scale
    is_ground = np.isfinite(ground_dist)[..., None]
    haze = np.where(is_ground, 1.0 - detmath.exp(-np.where(is_ground[..., 0], ground_dist, 0.0) / cond.visibility_m)[..., None],
                    1.0)
    fog = fog_rgb(cond).astype(np.float32)
    sky = sky * (0.5 + 0.5 * detmath.exp(-30.0 / cond.visibility_m)) + fog * 0.5 * (1 - detmath.exp(-30.0 / cond.visibility_m))
    light = cond.exposure * np.array(_TINT[cond.time_of_day], np.float32) * headlight_gain(ground_xy, cond)[..., None]
    gain = ((1.0 - haze) * light).astype(np.float32)
    base = np.where(is_ground, fog * haze, sky).astype(np.float32)
    if len(_LIGHTING_CACHE) > 64:
        _LIGHTING_CACHE.clear()
    _LIGHTING_CACHE[cache_key] = (gain, base)
    return gain, base


def headlight_gain(ground_xy: np.ndarray, cond: Conditions) -> np.ndarray:
    """(...,) brightness factor of the ground from the ego's headlights (1 in daylight): a cone ahead of the car
    that fades with distance, bringing the lit road back towards daylight brightness."""
    if not cond.headlights:
        return np.ones(ground_xy.shape[:-1], np.float32)
    x, y = ground_xy[..., 0], ground_xy[..., 1]
    cone = (x > 3.0) & (np.abs(y) < 1.2 + 0.3 * (x - 3.0))
    boost = (1.0 / cond.exposure - 1.0) * 0.8 * detmath.exp(-np.maximum(x - 3.0, 0.0) / 25.0)
    return np.where(cone, 1.0 + boost, 1.0).astype(np.float32)


def face_colours(base: np.ndarray, shade: np.ndarray, dist: np.ndarray, cond: Conditions) -> np.ndarray:
    """(K, 3) lit, tinted and fogged face colours from base colours (K, 3), shade factors (K,), distances (K,) m."""
    lit = base * (shade * cond.exposure)[:, None] * np.array(_TINT[cond.time_of_day])
    return fogged(lit, dist, cond)


def fogged(rgb: np.ndarray, dist: np.ndarray, cond: Conditions) -> np.ndarray:
    """Blend (K, 3) colours towards the fog colour by distance (K,) m."""
    keep = detmath.exp(-dist / cond.visibility_m)[:, None]
    return rgb * keep + fog_rgb(cond)[None] * (1 - keep)


def sensor_effects(image: np.ndarray, cond: Conditions, timestamp_us: int, channel: str) -> np.ndarray:
    """Exposure jitter, additive noise and blur on a (H, W, 3) uint8 image (returns a new or the same array)."""
    import cv2

    if cond.exposure_jitter <= 0 and cond.camera_noise <= 0 and cond.camera_blur_px <= 0.3:
        return image
    rng = np.random.default_rng([int(timestamp_us), zlib.crc32(channel.encode())])
    jitter = float(np.clip(1.0 + rng.normal(0.0, cond.exposure_jitter), 0.5, 1.5))
    image = cv2.convertScaleAbs(image, alpha=jitter)
    if cond.camera_noise > 0:
        h, w = image.shape[:2]
        dy, dx = (int(v) for v in rng.integers(0, _NOISE_MARGIN, 2))
        bank = _noise_bank(h, w, round(cond.camera_noise, 1))
        image = cv2.addWeighted(image, 1.0, np.ascontiguousarray(bank[dy:dy + h, dx:dx + w]), 1.0, -128.0)
    if cond.camera_blur_px > 0.3:
        image = cv2.GaussianBlur(image, (0, 0), cond.camera_blur_px)
    return image


@lru_cache(maxsize=4)
def _noise_bank(h: int, w: int, sigma: float) -> np.ndarray:
    """(h + margin, w + margin, 3) uint8 Gaussian noise around 128 with std `sigma` (fixed seed)."""
    noise = np.random.default_rng(0x5E45).normal(128.0, sigma, (h + _NOISE_MARGIN, w + _NOISE_MARGIN, 3))
    return np.clip(np.rint(noise), 0, 255).astype(np.uint8)
