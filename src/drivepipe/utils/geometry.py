"""Rigid-transform helpers with frame-named arguments.

Conventions (nuPlan): global frame = the city's UTM CRS in metres; ego frame = rear axle, x forward, y left, z up;
camera frame = OpenCV (x right, y down, z forward). Quaternions are scalar-first (w, x, y, z). `T_a_from_b` maps
homogeneous points of frame b into frame a.
"""

from __future__ import annotations

import numpy as np

from drivepipe.utils import detmath


def quat_to_matrix(q_wxyz: np.ndarray) -> np.ndarray:
    """(4,) unit quaternion (w, x, y, z) -> (3, 3) rotation matrix."""
    w, x, y, z = np.asarray(q_wxyz, dtype=np.float64) / detmath.norm(q_wxyz)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix -> (4,) quaternion (w, x, y, z) with w >= 0."""
    R = np.asarray(R, dtype=np.float64)
    tr = np.trace(R)
    if tr > 0:
        s = np.sqrt(tr + 1.0) * 2
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2]) * 2
        q = [(R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif R[1, 1] > R[2, 2]:
        s = np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2]) * 2
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s]
    else:
        s = np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1]) * 2
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s]
    q = np.array(q)
    return q if q[0] >= 0 else -q


def yaw_to_quat(yaw_rad: float) -> np.ndarray:
    """Rotation about +z by yaw -> (w, x, y, z)."""
    return np.array([detmath.cos(yaw_rad / 2), 0.0, 0.0, detmath.sin(yaw_rad / 2)])


def quat_to_yaw(q_wxyz: np.ndarray) -> float:
    """Heading about +z of a (w, x, y, z) quaternion (pyquaternion's yaw_pitch_roll[0])."""
    w, x, y, z = q_wxyz
    return float(detmath.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def make_transform(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """(3, 3) rotation or (4,) quaternion plus (3,) translation -> (4, 4) homogeneous transform."""
    R = quat_to_matrix(rotation) if np.asarray(rotation).shape == (4,) else np.asarray(rotation, dtype=np.float64)
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = translation
    return T


def pose_to_transform(x: float, y: float, z: float, yaw_rad: float) -> np.ndarray:
    """Planar pose in the parent frame -> (4, 4) T_parent_from_child."""
    return make_transform(yaw_to_quat(yaw_rad), np.array([x, y, z]))


def invert(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid (4, 4) transform."""
    Ti = np.eye(4)
    Ti[:3, :3] = T[:3, :3].T
    Ti[:3, 3] = -detmath.rotate(T[:3, 3], T[:3, :3].T)
    return Ti


def transform_points(T_dst_from_src: np.ndarray, points_N3: np.ndarray) -> np.ndarray:
    """Apply a (4, 4) transform to (N, 3) points; returns (N, 3) in the destination frame (float64)."""
    pts = np.asarray(points_N3, dtype=np.float64)
    return detmath.rotate(pts, T_dst_from_src[:3, :3]) + T_dst_from_src[:3, 3]


def wrap_angle(a: np.ndarray | float) -> np.ndarray | float:
    """Wrap angles to [-pi, pi)."""
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def global_to_ego_xy_yaw(xy_N2: np.ndarray, yaw_N: np.ndarray, ego_x: float, ego_y: float,
                         ego_yaw: float) -> tuple[np.ndarray, np.ndarray]:
    """Planar global (x, y, yaw) -> ego frame of a pose (ego_x, ego_y, ego_yaw)."""
    c, s = detmath.cos(ego_yaw), detmath.sin(ego_yaw)
    d = np.asarray(xy_N2, dtype=np.float64) - np.array([ego_x, ego_y])
    local = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], axis=1)
    return local, wrap_angle(np.asarray(yaw_N) - ego_yaw)


def rotate_vectors_2d(v_N2: np.ndarray, angle_rad: float) -> np.ndarray:
    """Rotate 2-D vectors by an angle (counter-clockwise)."""
    c, s = detmath.cos(angle_rad), detmath.sin(angle_rad)
    v = np.asarray(v_N2, dtype=np.float64)
    return np.stack([c * v[:, 0] - s * v[:, 1], s * v[:, 0] + c * v[:, 1]], axis=1)


def box_corners_2d(center_N2: np.ndarray, length_N: np.ndarray, width_N: np.ndarray,
                   yaw_N: np.ndarray) -> np.ndarray:
    """Footprint corners (N, 4, 2) of oriented boxes, counter-clockwise from front-left."""
    c, s = detmath.cos(yaw_N), detmath.sin(yaw_N)
    hl, hw = np.asarray(length_N) / 2, np.asarray(width_N) / 2
    lx = np.stack([hl, -hl, -hl, hl], axis=1)  # (N, 4) box-frame corners
    ly = np.stack([hw, hw, -hw, -hw], axis=1)
    c, s = np.asarray(c)[:, None], np.asarray(s)[:, None]
    return np.stack([c * lx - s * ly, s * lx + c * ly], axis=-1) + np.asarray(center_N2)[:, None, :]
