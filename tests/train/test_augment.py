"""Augmentations: the horizontal flip keeps images, calibration, lidar, boxes and rasters consistent."""

from __future__ import annotations

import numpy as np
import pytest
from _standin import make_sample, tiny_cfg

from drivepipe.config import AugmentConfig
from drivepipe.data.augment import Augmenter, color_jitter, hflip
from drivepipe.sample import ego_xy_to_pillar
from drivepipe.utils.geometry import box_corners_2d, invert, make_transform, yaw_to_quat


def _sample(seed: int = 0) -> tuple[dict, object]:
    cfg = tiny_cfg()
    return make_sample(cfg, np.random.default_rng(seed)), cfg


def _project(K: np.ndarray, T_ego_from_cam: np.ndarray, p_ego: np.ndarray) -> np.ndarray:
    p_cam = invert(T_ego_from_cam.astype(np.float64)) @ np.append(p_ego, 1.0)
    uvw = K.astype(np.float64) @ p_cam[:3]
    return uvw[:2] / uvw[2]


def test_flip_projection_lands_on_flipped_pixel() -> None:
    sample, cfg = _sample()
    h, w = sample["images"].shape[-2:]
    # a camera yawed 40 deg to the left, pitched a little, off-centre principal point and some skew
    opencv_to_ego = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=np.float64)
    R = make_transform(yaw_to_quat(np.deg2rad(40)), np.zeros(3))[:3, :3] @ opencv_to_ego
    T = make_transform(R, np.array([1.2, 0.4, 1.6]))
    K = np.array([[11.0, 0.3, 6.2], [0, 12.0, 8.7], [0, 0, 1]])
    sample["intrinsics"], sample["cam_to_ego"] = K[None].astype(np.float32), T[None].astype(np.float32)
    u0, v0, depth = 3, 11, 7.5
    p_cam = depth * np.linalg.solve(K, np.array([u0, v0, 1.0]))
    p_ego = (T @ np.append(p_cam, 1.0))[:3]
    img = np.zeros_like(sample["images"])
    img[0, :, v0, u0] = 255
    sample["images"] = img
    assert np.allclose(_project(K, T, p_ego), [u0, v0], atol=1e-4)

    out = hflip(sample, pillar_n=8)
    mirrored = p_ego * np.array([1.0, -1.0, 1.0])
    uv = _project(out["intrinsics"][0], out["cam_to_ego"][0], mirrored)
    assert np.allclose(uv, [w - 1 - u0, v0], atol=1e-4)
    assert out["images"][0, 0, v0, w - 1 - u0] == 255 and out["images"].sum() == 3 * 255
    R_new = out["cam_to_ego"][0, :3, :3].astype(np.float64)
    assert np.allclose(R_new @ R_new.T, np.eye(3), atol=1e-6) and np.isclose(np.linalg.det(R_new), 1.0)


def test_flip_mirrors_lidar_boxes_rasters_and_trajectories() -> None:
    sample, cfg = _sample(1)
    pre = cfg.preprocess
    n = int(round(2 * pre.bev_extent_m / pre.pillar_size_m))
    out = hflip(sample, n)
    assert np.array_equal(out["points"][:, 1], -sample["points"][:, 1])
    assert np.array_equal(out["pillar_index"], ego_xy_to_pillar(out["points"][:, :2], pre.bev_size,
                                                                pre.bev_resolution_m, pre.pillar_size_m))
    b, fb = sample["boxes"], out["boxes"]
    corners = box_corners_2d(b[:, :2], b[:, 3], b[:, 4], b[:, 6]) * np.array([1.0, -1.0])
    flipped = box_corners_2d(fb[:, :2], fb[:, 3], fb[:, 4], fb[:, 6])
    for c0, c1 in zip(corners, flipped):  # same footprint, corner order reversed by the mirror
        assert np.allclose(np.sort(c0, axis=0), np.sort(c1, axis=0), atol=1e-5)
    assert np.array_equal(fb[:, 8], -b[:, 8]) and np.array_equal(fb[:, 7], b[:, 7])
    # a raster cell at ego (x, y) moves to the cell containing (x, -y)
    s = pre.bev_size
    assert np.array_equal(out["seg"][:, 2, s - 1 - 1], sample["seg"][:, 2, 1])
    assert np.array_equal(out["occ"], sample["occ"][..., ::-1])
    for name in ("agent_hist", "agent_fut", "ego_hist", "ego_fut"):
        assert np.array_equal(out[name][..., 1:], -sample[name][..., 1:])
        assert np.array_equal(out[name][..., 0], sample[name][..., 0])
    assert np.array_equal(out["route"][:, 1], -sample["route"][:, 1])
    assert np.array_equal(out["ego_state"], sample["ego_state"] * np.array([1, -1, 1, -1, -1], np.float32))
    twice = hflip(out, n)
    for key in ("images", "intrinsics", "points", "pillar_index", "boxes", "seg", "route", "ego_state"):
        assert np.allclose(twice[key], sample[key], atol=1e-6), key
    assert np.allclose(twice["cam_to_ego"], sample["cam_to_ego"], atol=1e-6)


def test_point_dropout_and_noise_keep_indices_consistent_and_sorted() -> None:
    sample, cfg = _sample(2)
    pre = cfg.preprocess
    aug = AugmentConfig(hflip_prob=0.0, point_dropout=0.5, point_noise_std_m=0.3, brightness=0.0, contrast=0.0,
                        saturation=0.0)
    out = Augmenter(aug, pre)(sample, np.random.default_rng(0))
    pts, idx = out["points"], out["pillar_index"]
    assert 0 < len(pts) < len(sample["points"]) and len(pts) == len(idx)
    assert np.all(np.diff(idx) >= 0) and np.all(idx >= 0)
    assert np.array_equal(idx, ego_xy_to_pillar(pts[:, :2], pre.bev_size, pre.bev_resolution_m, pre.pillar_size_m))
    assert np.array_equal(out["images"], sample["images"])
    again = Augmenter(aug, pre)(sample, np.random.default_rng(0))
    assert all(np.array_equal(again[k], out[k]) for k in out if k != "meta")


def test_color_jitter_changes_pixels_within_uint8() -> None:
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 8, 8), dtype=np.uint8)
    out = color_jitter(images, np.random.default_rng(1), 0.5, 0.5, 0.5)
    assert out.dtype == np.uint8 and out.shape == images.shape and not np.array_equal(out, images)
    assert np.array_equal(color_jitter(images, np.random.default_rng(1), 0.0, 0.0, 0.0), images)


@pytest.mark.parametrize("enabled", [False])
def test_disabled_augmenter_is_identity(enabled: bool) -> None:
    sample, cfg = _sample(3)
    out = Augmenter(AugmentConfig(enabled=enabled), cfg.preprocess)(sample, np.random.default_rng(0))
    assert all(np.array_equal(out[k], sample[k]) for k in sample)
