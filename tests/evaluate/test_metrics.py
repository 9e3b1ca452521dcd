"""Metrics on hand-computed cases; streaming over batches equals the one-shot result."""

from __future__ import annotations

import numpy as np
import pytest

from drivepipe.metrics import (DetectionMetric, OccupancyMetric, PredictionMetric, RasterIoU, _average_precision,
                               _pr_curve, constant_velocity)


def box(x, y, yaw=0.0, l=4.0, w=2.0, vx=0.0):
    return [x, y, 0.8, l, w, 1.6, yaw, vx, 0.0]


def det(metric, preds, gts):
    pb = np.array([p[0] for p in preds]).reshape(-1, 9)
    metric.update(pb, np.array([p[1] for p in preds], dtype=int), np.array([p[2] for p in preds]),
                  np.array([g[0] for g in gts]).reshape(-1, 9), np.array([g[1] for g in gts], dtype=int))


def test_perfect_detection_scores_one_and_zero_errors():
    m = DetectionMetric()
    det(m, [(box(10, 0), 0, 0.9), (box(-5, 3), 2, 0.8)], [(box(10, 0), 0), (box(-5, 3), 2)])
    r = m.compute()
    assert r["mAP"] == pytest.approx(1.0)
    assert r["trans_err"] == pytest.approx(0.0) and r["scale_err"] == pytest.approx(0.0)
    assert r["NDS"] == pytest.approx(1.0)
    assert set(r["per_class"]) == {"vehicle", "pedestrian"}  # classes without GT are not averaged


def test_empty_detector_scores_zero():
    m = DetectionMetric()
    det(m, [], [(box(10, 0), 0)])
    r = m.compute()
    assert r["mAP"] == 0.0 and r["NDS"] == 0.0


def test_one_false_positive_ranked_first_halves_precision_at_full_recall():
    # FP (score .9) then TP (score .8): precision curve 0 -> 0.5 at recall 1, interpolated at 101 points.
    m = DetectionMetric()
    det(m, [(box(30, 30), 0, 0.9), (box(10, 0), 0, 0.8)], [(box(10, 0), 0)])
    rec, prec = _pr_curve(np.array([False, True]), 1)
    assert prec[-1] == pytest.approx(0.5) and prec[0] == pytest.approx(0.0)
    expected = _average_precision(prec)
    # hand value: precision at recall r in [0, 1] is 0.5*r (linear interpolation from (0, 0) to (1, .5))
    hand = np.mean(np.clip(0.5 * np.linspace(0, 1, 101)[11:] - 0.1, 0, None)) / 0.9
    assert expected == pytest.approx(hand)
    assert m.compute()["mAP"] == pytest.approx(hand)


def test_one_miss_halves_recall():
    m = DetectionMetric()
    det(m, [(box(10, 0), 0, 0.9)], [(box(10, 0), 0), (box(-10, 0), 0)])
    # precision 1 up to recall 0.5, 0 after: AP = mean(clip(p - .1)) over recall points 11..100 / .9
    hand = (np.sum(np.linspace(0, 1, 101)[11:] <= 0.5) * 0.9) / 90 / 0.9
    assert m.compute()["mAP"] == pytest.approx(hand)


@pytest.mark.parametrize(("offset", "n_thresholds_matched"), [(0.49, 4), (0.51, 3), (1.01, 2), (2.01, 1),
                                                              (4.01, 0)])
def test_match_threshold_edges(offset, n_thresholds_matched):
    m = DetectionMetric()
    det(m, [(box(10 + offset, 0), 0, 0.9)], [(box(10, 0), 0)])
    assert m.compute()["mAP"] == pytest.approx(n_thresholds_matched / 4)


def test_multiclass_labels_must_agree_and_classes_average():
    m = DetectionMetric()
    det(m, [(box(10, 0), 1, 0.9), (box(0, 5), 2, 0.9)], [(box(10, 0), 0), (box(0, 5), 2)])
    r = m.compute()
    assert r["per_class"]["vehicle"]["AP"] == 0.0 and r["per_class"]["pedestrian"]["AP"] == pytest.approx(1.0)
    assert r["mAP"] == pytest.approx(0.5)


def test_tp_errors_are_measured_at_2m():
    m = DetectionMetric()
    det(m, [(box(11.0, 0, yaw=0.3, l=2.0, w=2.0, vx=1.0), 0, 0.9)], [(box(10, 0, l=4.0, w=2.0), 0)])
    r = m.compute()
    assert r["trans_err"] == pytest.approx(1.0)
    assert r["scale_err"] == pytest.approx(0.5)  # 2x2x1.6 inside 4x2x1.6 -> IoU 0.5
    assert r["orient_err"] == pytest.approx(0.3)
    assert r["vel_err"] == pytest.approx(1.0)


def test_detection_streaming_equals_one_shot():
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(6):
        gts = [(box(*rng.uniform(-20, 20, 2)), int(rng.integers(0, 3))) for _ in range(4)]
        preds = [(box(g[0][0] + rng.normal(0, 1), g[0][1]), g[1], float(rng.uniform())) for g in gts[:3]]
        preds += [(box(*rng.uniform(-20, 20, 2)), 0, float(rng.uniform()))]
        samples.append((preds, gts))
    a, b = DetectionMetric(), DetectionMetric()
    for preds, gts in samples:
        det(a, preds, gts)
    for preds, gts in samples[::-1]:  # order of updates must not matter either
        det(b, preds, gts)
    assert a.compute()["mAP"] == pytest.approx(b.compute()["mAP"])


def test_raster_iou_hand_case_and_streaming():
    pred = np.zeros((2, 2, 4, 4))
    tgt = np.zeros((2, 2, 4, 4))
    pred[0, 0, :2] = 0.9  # 8 cells predicted
    tgt[0, 0, 1:3] = 1  # 8 cells true, 4 overlap -> IoU 4/12
    pred[1, 1, 0, 0] = tgt[1, 1, 0, 0] = 1  # class 1 perfect
    one = RasterIoU(["a", "b"])
    one.update(pred, tgt)
    two = RasterIoU(["a", "b"])
    two.update(pred[:1], tgt[:1])
    two.update(pred[1:], tgt[1:])
    r = one.compute()
    assert r["per_class"]["a"] == pytest.approx(4 / 12) and r["per_class"]["b"] == pytest.approx(1.0)
    assert r == two.compute()


def test_occupancy_metrics_hand_case():
    m = OccupancyMetric(0.5)
    m.update(np.array([0.9, 0.9, 0.1, 0.1]), np.array([1, 0, 1, 0]))
    r = m.compute()
    assert (r["iou"], r["accuracy"], r["precision"], r["recall"]) == pytest.approx((1 / 3, 0.5, 0.5, 0.5))


def _line(vx, steps=4, dt=0.5):
    return np.stack([np.arange(1, steps + 1) * dt * vx, np.zeros(steps)], -1)


def test_prediction_min_over_modes_miss_and_mode_precision_recall():
    gt = _line(2.0)[None]  # one agent, 4 steps, ends at x = 4
    good, bad = _line(2.0), _line(0.0)  # FDE 0 and 4
    traj = np.stack([bad, good])[None]  # (1, 2, 4, 2)
    probs = np.array([[0.7, 0.3]])
    m = PredictionMetric(0.5, 2.0, mode_threshold=0.2)
    m.update(traj, probs, gt, np.ones((1, 4), bool))
    r = m.compute()
    assert r["minADE"] == pytest.approx(0.0) and r["minFDE"] == pytest.approx(0.0)
    assert r["minFDE_1"] == pytest.approx(4.0)  # top-1 is the bad mode
    assert r["minADE_1"] == pytest.approx(np.mean([1, 2, 3, 4]))
    assert r["miss_rate_2m"] == 0.0
    assert r["mode_precision"] == pytest.approx(0.5) and r["mode_recall"] == pytest.approx(1.0)
    assert r["fde_by_horizon"] == pytest.approx([0, 0, 0, 0])


def test_prediction_masks_invalid_steps_and_uses_last_valid_for_fde():
    gt = _line(2.0)[None]
    traj = _line(2.0)[None, None].copy()
    traj[0, 0, 3] += 100.0  # garbage at a step that is invalid
    valid = np.array([[True, True, True, False]])
    m = PredictionMetric(0.5)
    m.update(traj, np.ones((1, 1)), gt, valid)
    assert m.compute()["minFDE"] == pytest.approx(0.0) and m.compute()["minADE"] == pytest.approx(0.0)


def test_collision_rate_counts_overlap_with_other_agents_ground_truth():
    # agent 0 predicted to drive into agent 1's (stationary) GT box; agent 1 predicted to stay put.
    gt = np.stack([_line(2.0), np.full((4, 2), [10.0, 0.0])])
    traj = np.stack([_line(5.0), np.full((4, 2), [10.0, 0.0])])[:, None]
    m = PredictionMetric(0.5)
    m.update(traj, np.ones((2, 1)), gt, np.ones((2, 4), bool), sizes_A2=np.array([[4.0, 2.0]] * 2),
             gt_yaw_AT=np.zeros((2, 4)))
    assert m.compute()["collision_rate"] == pytest.approx(0.5)


def test_constant_velocity_and_acceleration_baselines():
    hist = np.array([[[-3.0, 0, 0], [-2.0, 0, 0], [0.0, 0, 0]]])  # speeds 2 then 4 m/s at dt 0.5
    valid = np.ones((1, 3), bool)
    cv = constant_velocity(hist, valid, 2, 0.5)
    assert cv[0, 0, :, 0] == pytest.approx([2.0, 4.0])
    ca = constant_velocity(hist, valid, 2, 0.5, accel=True)
    # v = 4, a = (4 - 2) / 0.5 = 4: x(t) = 4 t + 2 t^2
    assert ca[0, 0, :, 0] == pytest.approx([4 * 0.5 + 2 * 0.25, 4 * 1.0 + 2 * 1.0])
