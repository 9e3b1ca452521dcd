"""Drawing helpers for pictures meant for people (`preprocess/show.py`, `evaluate/pictures.py`): 3-D box corners, their
wireframe edges and the pinhole projection. Not used for dataset or cache bytes, so plain numpy (BLAS) is fine here.
"""

from __future__ import annotations

import numpy as np

from drivepipe.utils.geometry import box_corners_2d, invert

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
