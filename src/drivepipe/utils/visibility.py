"""Which ground-truth boxes a sensor saw: lidar points inside each box and camera visibility of its centre.

Computed at evaluation time from the sample's own stored sweep (ego frame, cropped to preprocess.lidar_max_range_m,
which covers the whole BEV square) and its cameras' intrinsics / extrinsics. A GT box with no lidar point and no
camera view of its centre is removed from the detection ground truth, as nuScenes removes boxes without lidar or
radar points.
"""

from __future__ import annotations

import numpy as np


def lidar_points_in_boxes(points_P4: np.ndarray, boxes_M9: np.ndarray) -> np.ndarray:
    """(M,) int: points inside each (x, y, z, l, w, h, yaw, ...) box, z being the box centre height."""
    out = np.zeros(len(boxes_M9), dtype=np.int64)
    if len(points_P4) == 0:
        return out
    xyz = points_P4[:, :3].astype(np.float64)
    for m, b in enumerate(np.asarray(boxes_M9, dtype=np.float64)):
        d = xyz - b[:3]
        c, s = np.cos(b[6]), np.sin(b[6])
        along, across = c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]
        out[m] = int(((np.abs(along) <= b[3] / 2) & (np.abs(across) <= b[4] / 2) & (np.abs(d[:, 2]) <= b[5] / 2)).sum())
    return out


def camera_sees(boxes_M9: np.ndarray, intrinsics_N33: np.ndarray, cam_to_ego_N44: np.ndarray, width: int,
                height: int, min_depth_m: float = 0.5) -> np.ndarray:
    """(M,) bool: the box centre projects inside some camera's image, at least min_depth_m in front of it."""
    seen = np.zeros(len(boxes_M9), dtype=bool)
    if len(boxes_M9) == 0:
        return seen
    centres = np.c_[np.asarray(boxes_M9, np.float64)[:, :3], np.ones(len(boxes_M9))]
    for K, T in zip(intrinsics_N33, cam_to_ego_N44, strict=True):
        cam = (np.linalg.inv(T.astype(np.float64)) @ centres.T).T[:, :3]
        z = cam[:, 2]
        uv = (K.astype(np.float64) @ cam.T).T
        with np.errstate(invalid="ignore", divide="ignore"):
            u, v = uv[:, 0] / z, uv[:, 1] / z
        seen |= (z > min_depth_m) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    return seen


def seen_by_sensors(batch: dict, b: int, boxes_M9: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lidar points per box, camera sees the centre) for the GT boxes of item b of a collated CPU batch."""
    images = batch["images"]
    points = batch["points"][b][batch["point_valid"][b]].numpy()
    return (lidar_points_in_boxes(points, boxes_M9),
            camera_sees(boxes_M9, batch["intrinsics"][b].numpy(), batch["cam_to_ego"][b].numpy(),
                        int(images.shape[-1]), int(images.shape[-2])))
