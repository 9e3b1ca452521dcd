"""Train-time augmentations that keep every array of a `Sample` geometrically consistent.

`Augmenter(cfg.augment, cfg.preprocess)(sample, rng)` returns a new sample (the input is not modified):
- colour jitter (brightness, contrast, saturation) on the uint8 images;
- horizontal flip = mirror of the ego frame about its x-z plane (ego y -> -y), applied to images + calibration,
  lidar points + pillar indices, boxes, BEV rasters, trajectories, route and ego state;
- lidar point dropout and Gaussian xyz jitter (pillar indices recomputed, points kept sorted by pillar).

Validation data is never augmented: the loader only attaches an `Augmenter` to the training split.
Frames and the BEV / pillar grid convention are those of `drivepipe.sample`.
"""

from __future__ import annotations

import numpy as np

from drivepipe.config import AugmentConfig, PreprocessConfig
from drivepipe.sample import Sample, ego_xy_to_pillar, pillar_grid_size

# diag(1, -1, 1, 1): mirror of the ego frame (y -> -y); diag(-1, 1, 1, 1): mirror of camera x (image columns)
_FLIP_EGO = np.diag([1.0, -1.0, 1.0, 1.0])
_FLIP_CAM = np.diag([-1.0, 1.0, 1.0, 1.0])
_GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma weights


class Augmenter:
    """Callable `(sample, rng) -> sample`; every random draw comes from `rng`, so a fixed seed gives fixed output."""

    def __init__(self, aug: AugmentConfig, pre: PreprocessConfig) -> None:
        self.aug = aug
        self.pre = pre
        self.pillar_n = pillar_grid_size(pre.bev_size, pre.bev_resolution_m, pre.pillar_size_m)  # pillars per side

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        out = dict(sample)
        if not self.aug.enabled:
            return out
        out["images"] = color_jitter(out["images"], rng, self.aug.brightness, self.aug.contrast,
                                     self.aug.saturation)
        if rng.random() < self.aug.hflip_prob:
            out = hflip(out, self.pillar_n)
        return self._jitter_points(out, rng)

    def _jitter_points(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """Drop a share of the points, jitter xyz, recompute pillar indices, drop points that left the grid."""
        points = sample["points"]
        keep = rng.random(len(points)) >= self.aug.point_dropout
        points = points[keep].copy()
        if self.aug.point_noise_std_m > 0:
            points[:, :3] += rng.normal(0.0, self.aug.point_noise_std_m, (len(points), 3)).astype(np.float32)
        index = ego_xy_to_pillar(points[:, :2], self.pre.bev_size, self.pre.bev_resolution_m, self.pre.pillar_size_m)
        inside = index >= 0
        points, index = points[inside], index[inside]
        order = np.argsort(index, kind="stable")
        return {**sample, "points": points[order], "pillar_index": index[order]}


def color_jitter(images: np.ndarray, rng: np.random.Generator, brightness: float, contrast: float,
                 saturation: float) -> np.ndarray:
    """Random brightness, contrast and saturation on (N, 3, H, W) uint8 RGB images (one draw per camera)."""
    if brightness == 0 and contrast == 0 and saturation == 0:
        return images
    x = images.astype(np.float32)
    n = len(x)
    b = rng.uniform(1 - brightness, 1 + brightness, n).astype(np.float32)
    c = rng.uniform(1 - contrast, 1 + contrast, n).astype(np.float32)
    s = rng.uniform(1 - saturation, 1 + saturation, n).astype(np.float32)
    x = x * b[:, None, None, None]
    grey = np.einsum("c,nchw->nhw", _GREY, x)[:, None]            # (N, 1, H, W)
    mean = grey.mean(axis=(2, 3), keepdims=True)
    x = mean + c[:, None, None, None] * (x - mean)
    grey = np.einsum("c,nchw->nhw", _GREY, x)[:, None]
    x = grey + s[:, None, None, None] * (x - grey)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def flip_calibration(intrinsics: np.ndarray, cam_to_ego: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Calibration of horizontally flipped images in the mirrored ego frame.

    Pixel centres are at integer coordinates (OpenCV), so column u maps to W - 1 - u and cx' = W - 1 - cx; the
    camera frame is mirrored in x (skew changes sign). cam_to_ego' = F_ego @ cam_to_ego @ F_cam, which is again a
    proper rigid transform (two reflections), so projecting a mirrored ego point lands on the mirrored pixel.

    Args:
        intrinsics: (N, 3, 3) pinhole matrices of the images.
        cam_to_ego: (N, 4, 4) camera (OpenCV axes) -> ego transforms.
        width: image width in pixels.
    """
    K = intrinsics.copy()
    K[:, 0, 2] = (width - 1) - intrinsics[:, 0, 2]
    K[:, 0, 1] = -intrinsics[:, 0, 1]
    T = (_FLIP_EGO @ cam_to_ego.astype(np.float64) @ _FLIP_CAM).astype(cam_to_ego.dtype)
    return K, T


def _negate(arr: np.ndarray, columns: tuple[int, ...]) -> np.ndarray:
    out = arr.copy()
    for c in columns:
        out[..., c] = -out[..., c]
    return out


def hflip(sample: Sample, pillar_n: int) -> Sample:
    """Mirror a sample about the ego x-z plane (y -> -y); see the module docstring for what changes."""
    out = dict(sample)
    images = sample["images"]
    out["images"] = np.ascontiguousarray(images[..., ::-1])
    out["intrinsics"], out["cam_to_ego"] = flip_calibration(sample["intrinsics"], sample["cam_to_ego"],
                                                            images.shape[-1])
    out["points"] = _negate(sample["points"], (1,))
    index = sample["pillar_index"]
    i, j = np.divmod(index, pillar_n)
    out["pillar_index"] = np.where(index >= 0, i * pillar_n + (pillar_n - 1 - j), index)
    out["boxes"] = _negate(sample["boxes"], (1, 6, 8))                  # y, yaw, vy
    for name in ("seg", "occ"):
        out[name] = np.ascontiguousarray(sample[name][..., ::-1])
    for name in ("agent_hist", "agent_fut", "ego_hist", "ego_fut"):
        out[name] = _negate(sample[name], (1, 2))                       # y, yaw
    out["route"] = _negate(sample["route"], (1,))
    out["ego_state"] = _negate(sample["ego_state"], (1, 3, 4))          # vy, ay, yaw_rate
    return out
