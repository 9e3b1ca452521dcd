"""build_sample: shapes from the config, box/agent selection, inference mode, errors."""

from __future__ import annotations

import numpy as np
import pytest

from bundle_factory import make_bundle, small_preprocess
from drivepipe.errors import DataError
from drivepipe.preprocess.pipeline import build_sample, fit_steps, resample_route
from drivepipe.sample import ROUTE_POINTS, collate, ego_xy_to_cell, validate_sample


def test_shapes_follow_config():
    cfg = small_preprocess()
    s = build_sample(make_bundle(), cfg)
    validate_sample(s)
    assert s["images"].shape == (2, 3, cfg.image_height, cfg.image_width)
    assert s["seg"].shape == (4, 64, 64) and s["occ"].shape == (3, 64, 64)
    assert s["ego_hist"].shape == (3, 3) and s["ego_fut"].shape == (3, 3) and s["route"].shape == (ROUTE_POINTS, 2)
    assert np.allclose(s["ego_state"], [4.0, 0.1, 0.5, -0.2, 0.05])
    assert len(s["points"]) <= cfg.max_points and np.all(np.abs(s["points"][:, :2]) < cfg.bev_extent_m)


def test_boxes_and_agents_selection():
    cfg = small_preprocess(max_agents=2)
    s = build_sample(make_bundle(), cfg)
    # the box at x = 100 m is outside the 16 m BEV square; the rest keep their order
    assert s["box_track"].tolist() == [11, 12, 13, 15]
    assert np.allclose(s["boxes"][1], [-5.0, 4.0, 0.8, 4.0, 1.8, 1.5, np.pi / 2, 0.0, 3.0])
    # agents: nearest two of (10 m, 6.4 m, 6.7 m) -> tracks 12, 13, re-indexed into the kept boxes
    assert s["box_track"][s["agent_box"]].tolist() == [12, 13]
    assert s["agent_labels"].tolist() == [0, 2]
    assert np.allclose(s["agent_hist"][0, -1], [-5.0, 4.0, np.pi / 2])
    assert s["agent_fut_valid"][1].tolist() == [True, True, False]
    i, j = ego_xy_to_cell(np.array([[10.0, 0.0]]), 64, 0.5)[0]
    assert s["occ"][0, i, j] == 1 and s["occ"][2, i, j] == 0  # agent 10 m ahead at 5 m/s: gone after 1 s


def test_inference_mode_has_empty_targets_and_collates():
    cfg = small_preprocess()
    b = make_bundle(with_annotations=False)
    s = build_sample(b, cfg, with_targets=False)
    assert len(s["boxes"]) == 0 and len(s["agent_hist"]) == 0 and s["seg"].sum() == 0 and not s["route_valid"].any()
    full = build_sample(make_bundle(), cfg)
    batch = collate([s, full])
    assert batch["box_valid"].shape[0] == 2 and not batch["box_valid"][0].any() and batch["box_valid"][1].all()
    with pytest.raises(DataError, match="no annotations"):
        build_sample(b, cfg)


def test_missing_camera_is_a_data_error():
    cfg = small_preprocess(cameras=["CAM_F0", "CAM_B0"])
    with pytest.raises(DataError, match="CAM_B0 missing"):
        build_sample(make_bundle(), cfg)


def test_route_resampling():
    route = np.array([[-4.0, 1.0], [0.0, 1.0], [10.0, 1.0], [10.0, 21.0]])
    pts, valid = resample_route(route)
    assert np.allclose(pts[0], [0.0, 1.0]) and np.allclose(pts[5], [10.0, 1.0]) and np.allclose(pts[6], [10.0, 3.0])
    assert valid[:16].all() and not valid[16:].any()  # 30 m of route ahead -> s = 0, 2, ..., 30
    empty, ok = resample_route(np.zeros((0, 2)))
    assert empty.shape == (ROUTE_POINTS, 2) and not ok.any()


def test_fit_steps_crops_and_pads():
    traj = np.arange(12, dtype=float).reshape(4, 3)
    hist, hv = fit_steps(traj, np.ones(4, bool), 6, keep_last=True)
    assert hv.tolist() == [False, False, True, True, True, True] and np.allclose(hist[-1], traj[-1])
    fut, fv = fit_steps(traj, np.ones(4, bool), 2, keep_last=False)
    assert fv.all() and np.allclose(fut, traj[:2])


def test_deterministic():
    cfg = small_preprocess()
    a, b = build_sample(make_bundle(seed=5), cfg), build_sample(make_bundle(seed=5), cfg)
    assert all(np.array_equal(a[k], b[k]) for k in a)
