"""The camera renderer's top-down ground texture: label colours plus a surface grain fixed in the global frame, with
a contact shadow around every actor footprint, on the ego-frame `GroundRaster`.

Only the raster pixels that some camera of the rig reads are textured: the cameras' remap tables are fixed per
calibration, so the set of pixels they sample (each with its 2 x 2 bilinear neighbours) is found once per rig
(`sampled_pixels`, cached), and grain, colour lookup and sum are computed there alone, with the same per-pixel
arithmetic as over the whole raster. The other pixels stay 0 and are never read, so the images are the same
bytes at a fraction of the work.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from drivepipe.utils import detmath
from drivepipe.world.ground import NUM_LABELS, GroundRaster

_GRAIN_TILE_PX, _GRAIN_RES_M, _GRAIN_AMPLITUDE = 256, 0.2, 7.0  # periodic surface grain fixed in the global frame
LABEL_COLOURS_RGB = np.tile(np.array([96, 112, 74], np.uint8), (256, 1))  # per label; unused labels = terrain
LABEL_COLOURS_RGB[:NUM_LABELS] = [(96, 112, 74), (166, 164, 158), (72, 72, 75), (80, 80, 83), (232, 232, 224),
                                  (238, 238, 232)]
_SHADOW_RGB = (38, 38, 40)    # contact shadow drawn into the ground texture around each footprint
_SHADOW_MARGIN_M = 0.25
_REMAP_WIDTH = 1024           # scattered pixels are sampled as rows of this many (cv2 maps are 2-D)

Pixels = tuple[np.ndarray, np.ndarray]  # (N,) rows and (N,) columns of raster pixels
_PIXELS_CACHE: dict[tuple, Pixels] = {}


def sampled_pixels(key: tuple, maps: Sequence[np.ndarray], size: int) -> Pixels:
    """Raster pixels that cv2.remap reads through the fixed-point (H, W, 2) int16 `maps` of a rig's cameras
    (INTER_LINEAR: the integer (col, row) and its +1 neighbours, clamped to the edge as BORDER_REPLICATE does),
    row-major. Cached under `key` (the cameras' geometry keys)."""
    if key not in _PIXELS_CACHE:
        mask = np.zeros((size, size), bool)
        for m in maps:
            col, row = m[..., 0].ravel().astype(np.int64), m[..., 1].ravel().astype(np.int64)
            for dc in (0, 1):
                for dr in (0, 1):
                    mask[np.clip(row + dr, 0, size - 1), np.clip(col + dc, 0, size - 1)] = True
        if len(_PIXELS_CACHE) > 16:
            _PIXELS_CACHE.clear()
        _PIXELS_CACHE[key] = np.nonzero(mask)
    return _PIXELS_CACHE[key]


def ground_texture(raster: GroundRaster, corners: np.ndarray, pixels: Pixels) -> np.ndarray:
    """(S, S, 3) uint8 RGB ground texture at `pixels` (0 elsewhere): label colour + grain - 128, saturated (what
    cv2.addWeighted(colour, 1, grain, 1, -128) gives), plus a contact shadow around each (K, 8, 3) ego-frame box
    of `corners` (anti-aliased over the whole array)."""
    import cv2

    rows, cols = pixels
    size = raster.labels.shape[0]
    colour = LABEL_COLOURS_RGB[raster.labels[rows, cols]].astype(np.int16)
    texture = np.zeros((size, size, 3), np.uint8)
    texture[rows, cols] = np.clip(colour + _grain(raster, pixels).astype(np.int16)[:, None] - 128, 0, 255)
    if len(corners):
        foot = corners[:, :4, :2]
        centre = foot.mean(axis=1, keepdims=True)
        half = detmath.norm_rows(foot - centre)[..., None]
        grown = centre + (foot - centre) * (1 + _SHADOW_MARGIN_M / np.maximum(half, 1e-3))
        pix = raster.ego_to_pixel(grown.reshape(-1, 2)).reshape(-1, 4, 2)
        for quad in np.round(pix * 16).astype(np.int32):  # one call each: cv2 fills one call's contours even-odd
            cv2.fillPoly(texture, [quad], _SHADOW_RGB, cv2.LINE_AA, 4)
    return texture


@lru_cache(maxsize=1)
def _grain_tile() -> np.ndarray:
    """(5 N, 5 N) uint8 periodic grain around 128 (fine speckle plus soft blotches); fixed seed, always the same."""
    n = _GRAIN_TILE_PX
    spectrum = np.fft.fft2(np.random.default_rng(7).standard_normal((n, n)))
    f2 = np.fft.fftfreq(n)[:, None] ** 2 + np.fft.fftfreq(n)[None, :] ** 2
    layers = [np.fft.ifft2(spectrum * detmath.exp(-2 * np.pi**2 * sigma**2 * f2)).real for sigma in (0.7, 6.0)]
    grain = sum(w * g / g.std() for w, g in zip((0.6, 0.8), layers))
    tile = np.clip(128 + _GRAIN_AMPLITUDE * grain / grain.std(), 0, 255).astype(np.uint8)
    return np.tile(tile, (5, 5))  # pre-tiled: cv2's BORDER_WRAP path is about 20x slower


def _grain(raster: GroundRaster, pixels: Pixels | None = None) -> np.ndarray:
    """uint8 grain of the raster area, sampled from the global-frame tile so it stays put as the ego moves: (N,)
    at `pixels`, or (S, S) of the whole raster when None."""
    import cv2

    x, y, yaw = raster.pose
    period = _GRAIN_TILE_PX * _GRAIN_RES_M
    # the tile repeats: fold the pose into the middle copy of the 5 x 5 pre-tiled grain (also keeps cv2's
    # fixed-point coordinates small); the raster's half-diagonal (85 m) stays inside the +-2 copies around it
    tx, ty = x % period + 2 * period, y % period + 2 * period
    c, s, res, edge = detmath.cos(yaw), detmath.sin(yaw), raster.res_m, raster.radius_m - 0.5 * raster.res_m
    # raster (col, row) -> ego (edge - res row, edge - res col) -> global -> tile pixels
    M = np.array([[s * res, -c * res, (c - s) * edge + tx],
                  [-c * res, -s * res, (s + c) * edge + ty]]) / _GRAIN_RES_M
    size = raster.labels.shape[0]
    rows, cols = pixels if pixels is not None else np.indices((size, size)).reshape(2, -1)
    # cv2.warpAffine rounds differently with and without AVX2, so the inverse map is built here, (a * col + b * row)
    # + c per pixel in float64, and sampled with cv2.remap on fixed-point maps, whose integer arithmetic is the
    # same on every instruction set; each pixel's value depends on its own map entry alone
    col, row = cols.astype(np.float64), rows.astype(np.float64)
    n = len(col)
    pad = (0, -n % _REMAP_WIDTH)
    map_x = np.pad(((M[0, 0] * col + M[0, 1] * row) + M[0, 2]).astype(np.float32), pad).reshape(-1, _REMAP_WIDTH)
    map_y = np.pad(((M[1, 0] * col + M[1, 1] * row) + M[1, 2]).astype(np.float32), pad).reshape(-1, _REMAP_WIDTH)
    fixed = cv2.convertMaps(map_x, map_y, cv2.CV_16SC2)
    grain = cv2.remap(_grain_tile(), fixed[0], fixed[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    grain = grain.reshape(-1)[:n]
    return grain if pixels is not None else grain.reshape(size, size)
