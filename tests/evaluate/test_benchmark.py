"""The benchmark's statistics on hand-worked cases: scene-bootstrap intervals, fair K-mode baselines, both miss-rate
conventions, EPA, unseen-GT filtering, and the compare rule."""

from __future__ import annotations

import numpy as np
import pytest

from drivepipe.evaluate.baselines import kinematic_baseline
from drivepipe.evaluate.compare import compare, verdict
from drivepipe.evaluate.headline import SceneBook, agent_errors, end_to_end_counts, is_moving
from drivepipe.evaluate.scenebook import DetRows, ap_value_ci, detection_scores
from drivepipe.metrics import DetectionMetric
from drivepipe.schema import CATEGORIES
from drivepipe.utils.visibility import camera_sees, lidar_points_in_boxes


def _box(x: float, y: float) -> np.ndarray:
    return np.array([x, y, 0.5, 4.0, 2.0, 1.5, 0.0, 0.0, 0.0])


def test_pooled_ap_equals_the_streaming_metric():
    rng = np.random.default_rng(0)
    rows, metric = DetRows(), DetectionMetric()
    for sample in range(12):
        gt = np.stack([_box(*rng.uniform(-20, 20, 2)) for _ in range(3)])
        gt_labels = rng.integers(0, 3, 3)
        pred = gt[rng.random(3) < 0.7] + np.r_[rng.normal(0, 0.8, 2), np.zeros(7)]
        pred = np.concatenate([pred, [_box(*rng.uniform(-20, 20, 2))]])
        labels, scores = rng.integers(0, 3, len(pred)), rng.random(len(pred))
        rows.add(sample // 3, pred, labels, scores, gt, gt_labels)
        metric.update(pred, labels, scores, gt, gt_labels)
    ours = detection_scores(rows.arrays(), np.ones(4))
    theirs = metric.compute()
    assert ours["mAP"] == pytest.approx(theirs["mAP"], abs=1e-12)
    assert ours["NDS"] == pytest.approx(theirs["NDS"], abs=1e-12)


def test_ap_interval_by_hand():
    """Scene 0: one GT found by one prediction; scene 1: one GT, no prediction. Pooled: recall 0.5 at precision
    1 -> AP = 40 recall bins (0.11..0.50) of 0.9 / 90 / 0.9 = 4/9. Resamples: {0,0} -> 1, {1,1} -> 0 (each 1/4,
    above the 2.5 % tails), so the 95 % interval is [0, 1]."""
    rows = DetRows()
    rows.add(0, _box(0, 0)[None], np.array([0]), np.array([0.9]), _box(0.1, 0)[None], np.array([0]))
    rows.add(1, np.zeros((0, 9)), np.zeros(0, int), np.zeros(0), _box(5, 5)[None], np.array([0]))
    value, ci = ap_value_ci(rows.arrays(), 2)["mAP"]
    assert value == pytest.approx(4 / 9) and ci == [0.0, 1.0]


def test_ratio_interval_by_hand():
    """Occupancy IoU ΣI/ΣU: scene 0 (I=1, U=2), scene 1 (I=3, U=4): pooled 4/6; resamples give 0.5, 2/3 or 0.75."""
    book = SceneBook(CATEGORIES, 2.0, 1.0)
    near = np.zeros((2, 2), bool)
    for scene, (pred, gt) in enumerate((([1, 1, 0, 0], [1, 0, 0, 0]), ([1, 1, 1, 1], [1, 1, 1, 0]))):
        p, g = np.array(pred, bool).reshape(1, 2, 2), np.array(gt, bool).reshape(1, 2, 2)
        book.add_seg_occ(scene, np.zeros(1), np.ones(1), p, g, near)
    value, ci = book.occ["iou_grid"].value_ci(2)
    assert value == pytest.approx(4 / 6) and ci == [0.5, 0.75]


def test_cv_baseline_is_exact_on_a_constant_velocity_track_and_has_k_modes():
    t = np.arange(-4, 1) * 0.5  # history times, last = now
    hist = np.stack([np.c_[3.0 * t, -1.0 * t, np.zeros(5)]])  # 3 m/s forward, 1 m/s right
    fut_t = np.arange(1, 7) * 0.5
    gt = np.c_[3.0 * fut_t, -1.0 * fut_t][None]
    traj, probs = kinematic_baseline(hist, np.ones((1, 5), bool), 6, 0.5, num_modes=6)
    assert traj.shape == (1, 6, 6, 2) and probs.shape == (1, 6) and probs[0].argmax() == 0
    err = agent_errors(traj, probs, gt, np.ones((1, 6), bool), 2.0)
    assert err["minADE_1"][0] == pytest.approx(0, abs=1e-9) and err["minFDE_K"][0] == pytest.approx(0, abs=1e-9)
    assert not np.allclose(traj[0, 1], traj[0, 0])  # the other modes are real alternatives
    # constant acceleration: CA is exact where CV is not
    acc_hist = np.stack([np.c_[t**2, np.zeros(5), np.zeros(5)]])
    acc_gt = np.c_[fut_t**2, np.zeros(6)][None]
    ca = agent_errors(*kinematic_baseline(acc_hist, np.ones((1, 5), bool), 6, 0.5, 3, accel=True), acc_gt,
                      np.ones((1, 6), bool), 2.0)
    cv = agent_errors(*kinematic_baseline(acc_hist, np.ones((1, 5), bool), 6, 0.5, 3), acc_gt,
                      np.ones((1, 6), bool), 2.0)
    assert ca["minFDE_1"][0] == pytest.approx(0, abs=1e-9) and cv["minFDE_1"][0] > 1.0


def test_miss_rate_conventions_differ_on_a_detour():
    gt = np.zeros((1, 3, 2))
    traj = np.array([[[[0, 0], [0, 3.0], [0, 1.0]]]])  # 3 m off mid-way, 1 m off at the end
    err = agent_errors(traj, np.ones((1, 1)), gt, np.ones((1, 3), bool), 2.0)
    assert err["miss_rate_endpoint_K"][0] == 0.0 and err["miss_rate_anypoint_K"][0] == 1.0
    assert is_moving(np.zeros((1, 2)), np.array([[[0, 0.4], [0, 1.2]]]), np.ones((1, 2), bool), 1.0)[0]


def test_epa_by_hand():
    """GT agents at x = 0, 10, 20 (all with a future going +1 m/step); detections: one on agent 0 with the right
    forecast (hit), one on agent 1 with a 5 m-off forecast (matched, no hit), one at x = 40 (false positive);
    agent 2 is missed. EPA = (1 - 0.5 * 1) / 3."""
    gt_xy = np.array([[0.0, 0], [10, 0], [20, 0]])
    fut = gt_xy[:, None] + np.array([[1.0, 0], [2, 0]])[None]
    det_xy = np.array([[0.3, 0], [10.5, 0], [40, 0]])
    det_traj = np.stack([fut[0][None], (fut[1] + [0, 5.0])[None], fut[0][None]])  # (D, K=1, T, 2)
    c = end_to_end_counts(det_xy, np.zeros(3, int), np.array([0.9, 0.8, 0.7]), det_traj, gt_xy, np.zeros(3, int),
                          fut, np.ones((3, 2), bool), 2.0)
    assert (c["hits"], c["false_positives"], c["num_gt"]) == (1, 1, 3)
    book = SceneBook(CATEGORIES, 2.0, 1.0)
    book.add_e2e(book.scene_of({"log": "l", "scene": "s"}), c)
    assert book.e2e["EPA"].value_ci(1)[0] == pytest.approx(0.5 / 3)
    # a detection of another class does not match
    assert end_to_end_counts(det_xy[:1], np.array([2]), np.ones(1), det_traj[:1], gt_xy, np.zeros(3, int), fut,
                             np.ones((3, 2), bool), 2.0)["false_positives"] == 1


def test_lidar_points_and_camera_visibility():
    box = _box(10, 0)[None]
    pts = np.array([[10, 0, 0.5, 1], [11.9, 0.9, 1.2, 1], [12.1, 0, 0.5, 1], [10, 0, 1.3, 1]], np.float32)
    assert lidar_points_in_boxes(pts, box).tolist() == [2]  # 12.1 is past the 2 m half-length, z 1.3 above
    K = np.array([[100.0, 0, 50], [0, 100, 25], [0, 0, 1]])
    cam_to_ego = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 1.5], [0, 0, 0, 1]], float)  # looks along +x
    seen = camera_sees(np.stack([_box(10, 0), _box(-10, 0), _box(10, 30)]), K[None], cam_to_ego[None], 100, 50)
    assert seen.tolist() == [True, False, False]


def test_compare_rule():
    a = {"detection": {"mAP": 0.5, "mAP_ci95": [0.4, 0.6], "NDS": 0.5, "NDS_ci95": [0.45, 0.55]}, "counts": {"x": 1}}
    b = {"detection": {"mAP": 0.8, "mAP_ci95": [0.7, 0.9], "NDS": 0.52, "NDS_ci95": [0.5, 0.6]}}
    rows = {r["metric"]: r for r in compare(a, b)}
    assert set(rows) == {"detection.mAP", "detection.NDS"}
    assert rows["detection.mAP"]["verdict"] == "outside noise" and rows["detection.mAP"]["diff"] == pytest.approx(0.3)
    assert rows["detection.NDS"]["verdict"] == "within noise"
    assert verdict((0.1, None), (0.2, [0.1, 0.3])) == "no interval"


def test_compare_reads_carla_eval_intervals_per_agent():
    # carla_eval's metrics.json keeps intervals in a `ci95` dict beside the values (top level and per agent/mode)
    def run(ds, lo, hi):
        return {"driving_score": ds, "route_completion": 50.0, "ci95": {"driving_score": [lo, hi]},
                "agents": {"model": {"replay": {"driving_score": ds, "ci95": {"driving_score": [lo, hi]}}}},
                "closed_loop_config": {"workers": 2}}
    rows = {r["metric"]: r for r in compare(run(40.0, 30.0, 50.0), run(70.0, 60.0, 80.0))}
    assert set(rows) == {"driving_score", "agents.model.replay.driving_score"}  # no interval: no row
    assert all(r["verdict"] == "outside noise" and r["diff"] == pytest.approx(30.0) for r in rows.values())
