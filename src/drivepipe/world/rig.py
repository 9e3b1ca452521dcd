"""Sensor rig of the synthetic ego (a Chrysler Pacifica, as in nuPlan) and its camera model.

Frames: ego = rear axle, x forward, y left, z up (m); camera = OpenCV (x right, y down, z forward). Each
`CameraCalibration.T_ego_from_cam` maps camera-frame points to the ego frame. The lens model is OpenCV's
5-coefficient Brown-Conrady model (k1, k2, p1, p2, k3) applied to normalised coordinates (x / z, y / z).

The camera model functions here (`distort_normalized`, `undistort_normalized`, `project_points`) are the single
implementation shared by the camera renderer, the tests and anyone projecting points into the synthetic images.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from drivepipe.config import CAMERA_CHANNELS
from drivepipe.schema import CameraCalibration
from drivepipe.utils import detmath
from drivepipe.utils.geometry import invert, make_transform

# Reference model: 1920 x 1080 like nuPlan; focal lengths in px at that size (wider FOV for side/back cameras).
_REF_WIDTH, _REF_HEIGHT = 1920, 1080
_DISTORTION = (-0.25, 0.07, 0.0006, -0.0004, -0.01)  # k1, k2, p1, p2, k3

# channel -> (x, y, z) m in the ego frame, yaw deg (left positive), pitch deg (down positive), fx at 1920 px,
# principal-point offset (dx, dy) as a fraction of (width, height).
_CAMERAS: dict[str, tuple[tuple[float, float, float], float, float, float, tuple[float, float]]] = {
    "CAM_F0": ((1.85, 0.00, 1.80), 0.0, 3.0, 1550.0, (0.004, 0.018)),
    "CAM_L0": ((1.70, 0.45, 1.80), 55.0, 5.0, 1300.0, (-0.003, 0.012)),
    "CAM_R0": ((1.70, -0.45, 1.80), -55.0, 5.0, 1300.0, (0.002, 0.010)),
    "CAM_L1": ((1.00, 0.55, 1.80), 90.0, 6.0, 1300.0, (0.003, 0.015)),
    "CAM_R1": ((1.00, -0.55, 1.80), -90.0, 6.0, 1300.0, (-0.002, 0.014)),
    "CAM_L2": ((0.20, 0.50, 1.80), 125.0, 5.0, 1300.0, (0.001, 0.011)),
    "CAM_R2": ((0.20, -0.50, 1.80), -125.0, 5.0, 1300.0, (-0.004, 0.013)),
    "CAM_B0": ((-0.60, 0.00, 1.80), 180.0, 4.0, 1400.0, (0.002, 0.016)),
}
_LIDAR_TRANSLATION_M = (1.30, 0.0, 1.90)  # roof-top merged-lidar origin; deliberately not at the rear axle


@dataclass(frozen=True)
class Rig:
    """cameras: channel -> calibration for all 8 nuPlan channels; T_ego_from_lidar: (4, 4) lidar -> ego."""

    cameras: dict[str, CameraCalibration]
    T_ego_from_lidar: np.ndarray


def camera_rotation(yaw_rad: float, pitch_down_rad: float) -> np.ndarray:
    """(3, 3) R_ego_from_cam for an OpenCV camera looking along `yaw_rad`, tilted down by `pitch_down_rad`.

    Columns are the camera x (right), y (down) and z (optical axis) directions expressed in the ego frame.
    """
    cy, sy, cp, sp = detmath.cos(yaw_rad), detmath.sin(yaw_rad), detmath.cos(pitch_down_rad), detmath.sin(pitch_down_rad)
    z_axis = np.array([cy * cp, sy * cp, -sp])
    x_axis = np.array([sy, -cy, 0.0])
    y_axis = np.cross(z_axis, x_axis)
    return np.stack([x_axis, y_axis, z_axis], axis=1)


def default_rig(width: int, height: int) -> Rig:
    """The synthetic rig at image size (width, height) px; intrinsics scale from the 1920 x 1080 reference."""
    if width < 8 or height < 8:
        raise ValueError(f"image size too small: {width} x {height}")
    sx, sy = width / _REF_WIDTH, height / _REF_HEIGHT
    cameras = {}
    for channel in CAMERA_CHANNELS:
        pos, yaw_deg, pitch_deg, f_ref, (dx, dy) = _CAMERAS[channel]
        K = np.array([[f_ref * sx, 0.0, width * (0.5 + dx)],
                      [0.0, f_ref * sy, height * (0.5 + dy)],
                      [0.0, 0.0, 1.0]])
        distortion = np.array(_DISTORTION, dtype=np.float64)
        R = camera_rotation(detmath.radians(yaw_deg), detmath.radians(pitch_deg))
        cameras[channel] = CameraCalibration(channel=channel, width=int(width), height=int(height), intrinsic=K,
                                             distortion=distortion, T_ego_from_cam=make_transform(R, np.array(pos)))
        _check_invertible(cameras[channel])
    return Rig(cameras=cameras, T_ego_from_lidar=make_transform(np.eye(3), np.array(_LIDAR_TRANSLATION_M)))


def _check_invertible(calib: CameraCalibration) -> None:
    """Assert every image corner lies inside the monotonic part of the lens model (so undistortion is unique)."""
    K, r_max = calib.intrinsic, max_valid_radius(tuple(calib.distortion))
    corners = np.array([[0, 0], [calib.width, 0], [0, calib.height], [calib.width, calib.height]], float)
    xd = (corners[:, 0] - K[0, 2]) / K[0, 0]
    yd = (corners[:, 1] - K[1, 2]) / K[1, 1]
    x_lim, y_lim = distort_normalized(np.array([r_max]), np.zeros(1), calib.distortion)
    assert detmath.hypot(xd, yd).max() < 0.97 * x_lim[0], f"{calib.channel}: image exceeds the invertible lens region"


@lru_cache(maxsize=64)
def max_valid_radius(distortion: tuple[float, ...]) -> float:
    """Largest undistorted normalised radius up to which the radial model r -> r_d(r) is increasing.

    Beyond it the polynomial folds back and maps far off-axis rays into the image; callers treat such points as
    outside the field of view. Returns 3.0 (about 72 deg off-axis) when the model never folds before that.
    """
    k1, k2, _, _, k3 = distortion
    r = np.linspace(0.0, 3.0, 3001)
    r2 = r * r
    slope = 1 + 3 * k1 * r2 + 5 * k2 * (r2 * r2) + 7 * k3 * (r2 * r2 * r2)
    bad = np.nonzero(slope <= 0.05)[0]
    return float(r[bad[0] - 1]) if bad.size else 3.0


def distort_normalized(x: np.ndarray, y: np.ndarray, distortion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undistorted normalised coords (x / z, y / z) -> distorted normalised coords (OpenCV 5-term model)."""
    k1, k2, p1, p2, k3 = (float(c) for c in distortion)
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return xd, yd


def undistort_normalized(xd: np.ndarray, yd: np.ndarray, distortion: np.ndarray,
                         iterations: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Invert `distort_normalized` by Newton's method (vectorised; converges to < 1e-10 inside the image)."""
    k1, k2, p1, p2, k3 = (float(c) for c in distortion)
    x, y = xd.astype(np.float64).copy(), yd.astype(np.float64).copy()
    for _ in range(iterations):
        fx, fy = distort_normalized(x, y, distortion)
        ex, ey = fx - xd, fy - yd
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        s = k1 + 2 * k2 * r2 + 3 * k3 * r2 * r2  # d radial / d r2
        a = radial + 2 * x * x * s + 2 * p1 * y + 6 * p2 * x
        b = 2 * x * y * s + 2 * p1 * x + 2 * p2 * y
        d = radial + 2 * y * y * s + 6 * p1 * y + 2 * p2 * x
        det = a * d - b * b
        x = x - (d * ex - b * ey) / det
        y = y - (a * ey - b * ex) / det
    return x, y


def pixel_to_normalized(calib: CameraCalibration, uv: np.ndarray) -> np.ndarray:
    """(N, 2) distorted pixel coords (pixel centres at integers) -> (N, 2) undistorted normalised coords."""
    K = calib.intrinsic
    yd = (uv[:, 1] - K[1, 2]) / K[1, 1]
    xd = (uv[:, 0] - K[0, 2] - K[0, 1] * yd) / K[0, 0]
    x, y = undistort_normalized(xd, yd, calib.distortion)
    return np.stack([x, y], axis=1)


def normalized_to_pixel(calib: CameraCalibration, xn: np.ndarray, yn: np.ndarray) -> np.ndarray:
    """Undistorted normalised coords -> (N, 2) distorted pixel coords (no field-of-view check)."""
    K = calib.intrinsic
    xd, yd = distort_normalized(xn, yn, calib.distortion)
    return np.stack([K[0, 0] * xd + K[0, 1] * yd + K[0, 2], K[1, 1] * yd + K[1, 2]], axis=1)


def project_points(calib: CameraCalibration, points_ego: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project ego-frame points into the distorted image.

    Args:
        calib: camera calibration (intrinsic, 5-term distortion, camera -> ego extrinsic).
        points_ego: (N, 3) points in the ego frame, m.

    Returns:
        uv: (N, 2) float64 distorted pixel coordinates (pixel centres at integers); NaN for points behind the
            camera (depth <= 1 mm) or outside the lens model's valid field (see `max_valid_radius`).
        depth: (N,) float64 camera-frame z, m.
    """
    pts = np.asarray(points_ego, dtype=np.float64).reshape(-1, 3)
    T_cam_from_ego = invert(calib.T_ego_from_cam)
    pc = detmath.rotate(pts, T_cam_from_ego[:3, :3]) + T_cam_from_ego[:3, 3]
    depth = pc[:, 2]
    valid = depth > 1e-3
    safe = np.where(valid, depth, 1.0)
    xn, yn = pc[:, 0] / safe, pc[:, 1] / safe
    valid &= detmath.hypot(xn, yn) <= max_valid_radius(tuple(calib.distortion))
    uv = normalized_to_pixel(calib, xn, yn)
    uv[~valid] = np.nan
    return uv, depth
