"""Rigid-transform helpers with frame-named arguments.

Conventions (nuPlan): global frame = the city's UTM CRS in metres; ego frame = rear axle, x forward, y left, z up;
camera frame = OpenCV (x right, y down, z forward). Quaternions are scalar-first (w, x, y, z). `T_a_from_b` maps
homogeneous points of frame b into frame a.
"""

from __future__ import annotations

import numpy as np


def quat_to_matrix(q_wxyz: np.ndarray) -> np.ndarray:
    """(4,) unit quaternion (w, x, y, z) -> (3, 3) rotation matrix."""
    w, x, y, z = np.asarray(q_wxyz, dtype=np.float64) / np.linalg.norm(q_wxyz)
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
    return np.array([np.cos(yaw_rad / 2), 0.0, 0.0, np.sin(yaw_rad / 2)])


def quat_to_yaw(q_wxyz: np.ndarray) -> float:
    """Heading about +z of a (w, x, y, z) quaternion (pyquaternion's yaw_pitch_roll[0])."""
    w, x, y, z = q_wxyz
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


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
    Ti[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return Ti


def transform_points(T_dst_from_src: np.ndarray, points_N3: np.ndarray) -> np.ndarray:
    """Apply a (4, 4) transform to (N, 3) points; returns (N, 3) in the destination frame (float64)."""
    pts = np.asarray(points_N3, dtype=np.float64)
    return pts @ T_dst_from_src[:3, :3].T + T_dst_from_src[:3, 3]


def wrap_angle(a: np.ndarray | float) -> np.ndarray | float:
    """Wrap angles to [-pi, pi)."""
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def global_to_ego_xy_yaw(xy_N2: np.ndarray, yaw_N: np.ndarray, ego_x: float, ego_y: float,
                         ego_yaw: float) -> tuple[np.ndarray, np.ndarray]:
    """Planar global (x, y, yaw) -> ego frame of a pose (ego_x, ego_y, ego_yaw)."""
    c, s = np.cos(ego_yaw), np.sin(ego_yaw)
    d = np.asarray(xy_N2, dtype=np.float64) - np.array([ego_x, ego_y])
    local = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], axis=1)
    return local, wrap_angle(np.asarray(yaw_N) - ego_yaw)


def rotate_vectors_2d(v_N2: np.ndarray, angle_rad: float) -> np.ndarray:
    """Rotate 2-D vectors by an angle (counter-clockwise)."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    v = np.asarray(v_N2, dtype=np.float64)
    return np.stack([c * v[:, 0] - s * v[:, 1], s * v[:, 0] + c * v[:, 1]], axis=1)


def box_corners_2d(center_N2: np.ndarray, length_N: np.ndarray, width_N: np.ndarray,
                   yaw_N: np.ndarray) -> np.ndarray:
    """Footprint corners (N, 4, 2) of oriented boxes, counter-clockwise from front-left."""
    c, s = np.cos(yaw_N), np.sin(yaw_N)
    hl, hw = np.asarray(length_N) / 2, np.asarray(width_N) / 2
    local = np.stack([np.stack([hl, hw], -1), np.stack([-hl, hw], -1),
                      np.stack([-hl, -hw], -1), np.stack([hl, -hw], -1)], axis=1)  # (N, 4, 2)
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], axis=1)  # (N, 2, 2)
    return np.einsum("nij,nkj->nki", rot, local) + np.asarray(center_N2)[:, None, :]


# wireframe edges between the 8 corners of `box_corners_3d`
BOX_EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7))


def box_corners_3d(boxes_M9: np.ndarray) -> np.ndarray:
    """(M, 8, 3) corners of boxes [x, y, z (centre), l, w, h, yaw, ...]: bottom face (4, CCW from front-left) then
    the top face, in the boxes' frame (m)."""
    b = np.asarray(boxes_M9, dtype=np.float64).reshape(-1, 9)
    foot = box_corners_2d(b[:, :2], b[:, 3], b[:, 4], b[:, 6])  # (M, 4, 2)
    z0 = (b[:, 2] - b[:, 5] / 2)[:, None, None]
    z1 = (b[:, 2] + b[:, 5] / 2)[:, None, None]
    bottom = np.concatenate([foot, np.broadcast_to(z0, foot.shape[:2] + (1,))], axis=2)
    top = np.concatenate([foot, np.broadcast_to(z1, foot.shape[:2] + (1,))], axis=2)
    return np.concatenate([bottom, top], axis=1)


def project_to_image(points_N3: np.ndarray, K: np.ndarray, cam_to_ego: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pinhole projection of ego-frame points (N, 3) m into an undistorted image with intrinsics K (3, 3) and the
    rigid camera (OpenCV axes) -> ego transform (4, 4): pixel (u, v) (N, 2) and depth along the optical axis (N,) m.
    Points with depth <= 0 are behind the camera; their uv is meaningless."""
    T = invert(np.asarray(cam_to_ego, np.float64))
    pc = np.asarray(points_N3, np.float64) @ T[:3, :3].T + T[:3, 3]
    z = pc[:, 2]
    uv = (pc @ np.asarray(K, np.float64).T)[:, :2] / np.maximum(z, 1e-6)[:, None]
    return uv, z
