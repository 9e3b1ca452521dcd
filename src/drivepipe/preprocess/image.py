"""Camera images: undistort (5-coefficient Brown-Conrady / OpenCV model) and resize in one remap.

The remap tables are built once per (calibration, JPEG decode reduction, output size) and cached. The output
pinhole matrix keeps the original focal lengths and principal point scaled by the resize factors, so a 3-D point in
camera coordinates projects with the returned intrinsics onto the resized undistorted image exactly where the ideal
(distortion-free) camera would put it, scaled. Images stay uint8; normalisation constants are exported for the model and the cache
header.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np

from drivepipe.schema import CameraCalibration

# ImageNet statistics in RGB order, on [0, 1] pixel values. The model normalises with these; stored images are uint8.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)

_MAX_CACHED_MAPS = 64
_MAP_CACHE: OrderedDict[bytes, tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]] = OrderedDict()


def scaled_intrinsics(K: np.ndarray, src_wh: tuple[int, int], dst_wh: tuple[int, int]) -> np.ndarray:
    """Pinhole matrix (3, 3) for an image resized from src (W, H) to dst (W, H) px.

    Uses the pixel-centre convention: a pixel centre u maps to (u + 0.5) * s - 0.5.
    """
    sx, sy = dst_wh[0] / src_wh[0], dst_wh[1] / src_wh[1]
    out = np.array(K, dtype=np.float64, copy=True)
    out[0, 0] *= sx
    out[0, 1] *= sx
    out[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    out[1, 1] *= sy
    out[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return out


def downscaled_intrinsics(K: np.ndarray, downscale: int) -> np.ndarray:
    """Pinhole matrix (3, 3) of an image decoded at 1/downscale (JPEG DCT scaling: pixel u covers stored pixels
    [u * downscale, (u + 1) * downscale), whatever the rounding of the decoded size)."""
    return scaled_intrinsics(K, (downscale, downscale), (1, 1))


def _cache_key(cal: CameraCalibration, out_wh: tuple[int, int], downscale: int) -> bytes:
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(cal.intrinsic, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(cal.distortion, dtype=np.float64).tobytes())
    h.update(np.array([cal.width, cal.height, *out_wh, downscale], dtype=np.int64).tobytes())
    return h.digest()


def _pre_size(src_wh: tuple[int, int], out_wh: tuple[int, int]) -> tuple[int, int]:
    """Size to area-downsample the distorted image to before the remap (anti-aliasing for big reductions)."""
    if src_wh[0] > 2 * out_wh[0] and src_wh[1] > 2 * out_wh[1]:
        return 2 * out_wh[0], 2 * out_wh[1]
    return src_wh


def undistort_maps(cal: CameraCalibration, out_wh: tuple[int, int], downscale: int = 1
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """Cached remap tables for one calibration, decode reduction and output size.

    Returns (map_xy (H, W, 2) int16, map_frac (H, W) uint16, K_out (3, 3) float64, pre_wh): the image as decoded
    (1/downscale of the calibrated size) is first area-resized to `pre_wh` (W, H) px when it is more than twice the
    output, then `cv2.remap(img, map_xy, map_frac)` (OpenCV's fixed-point tables, 1/32 px) gives the undistorted
    output.
    """
    import cv2

    key = _cache_key(cal, out_wh, downscale)
    hit = _MAP_CACHE.get(key)
    if hit is not None:
        _MAP_CACHE.move_to_end(key)
        return hit
    src_wh = (-(-int(cal.width) // downscale), -(-int(cal.height) // downscale))
    K_src = downscaled_intrinsics(cal.intrinsic, downscale)
    pre_wh = _pre_size(src_wh, out_wh)
    K_pre = scaled_intrinsics(K_src, src_wh, pre_wh)
    K_out = scaled_intrinsics(cal.intrinsic, (int(cal.width), int(cal.height)), out_wh)
    map_xy, map_frac = cv2.initUndistortRectifyMap(K_pre, np.asarray(cal.distortion, np.float64), None, K_out,
                                                   out_wh, cv2.CV_16SC2)
    entry = (map_xy, map_frac, K_out, pre_wh)
    _MAP_CACHE[key] = entry
    while len(_MAP_CACHE) > _MAX_CACHED_MAPS:
        _MAP_CACHE.popitem(last=False)
    return entry


def undistort_resize(image_HW3: np.ndarray, cal: CameraCalibration, width: int, height: int, downscale: int = 1
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Undistort and resize one camera image.

    Args:
        image_HW3: (H, W, 3) uint8 RGB as captured (distorted): the calibrated size, or 1/downscale of it as the
            JPEG decoder's reduction gives it (`schema.CameraFrame.downscale`).
        cal: the camera's calibration (intrinsic in px of the stored image, distortion k1, k2, p1, p2, k3).
        width, height: output size in px (preprocess.image_width / image_height).
        downscale: the decode reduction of `image_HW3` (1, 2, 4 or 8).

    Returns:
        image (3, height, width) uint8 RGB (channels first) and intrinsics (3, 3) float32 of that image.
    """
    import cv2

    map_xy, map_frac, K_out, pre_wh = undistort_maps(cal, (int(width), int(height)), downscale)
    img = image_HW3
    expected = (-(-int(cal.width) // downscale), -(-int(cal.height) // downscale))
    if (img.shape[1], img.shape[0]) != expected:
        raise ValueError(f"camera {cal.channel}: image is {img.shape[1]}x{img.shape[0]}, expected {expected[0]}x"
                         f"{expected[1]} ({cal.width}x{cal.height} decoded at 1/{downscale})")
    if expected != pre_wh:
        img = cv2.resize(img, pre_wh, interpolation=cv2.INTER_AREA)
    out = cv2.remap(img, map_xy, map_frac, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                    borderValue=0)
    chw = np.empty((3, int(height), int(width)), np.uint8)
    cv2.split(out, [chw[0], chw[1], chw[2]])  # channels first, written in place (faster than a transpose copy)
    return chw, K_out.astype(np.float32)
