"""Per-sample evaluation records grouped by scene, from which the headline metrics and their 95 % intervals are
computed by the scene-clustered bootstrap of `drivepipe.stats` (resample whole scenes, recompute on the pool).

Records: detection (per prediction: class, score, TP flag per distance threshold, TP errors at 2 m; per GT box:
class), segmentation and occupancy intersections/unions, per-agent prediction errors of each predictor (model,
CV, CA; moving or stationary) and end-to-end forecasting counts. Every metric is a function of per-scene weights
(how many times each scene was drawn), so the point estimate (all weights 1) and every bootstrap resample run the
same code.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from drivepipe.metrics import DIST_THRESHOLDS_M, TP_ERRORS, TP_THRESHOLD_M, _average_precision, _match
from drivepipe.stats import percentile_interval, ratio_of_sums_ci, resample_indices

NUM_RESAMPLES_AP = 300  # bootstrap resamples of the AP-based metrics (each recomputes every PR curve)


@dataclass
class DetRows:
    """Detection records of one slice (all boxes, or one distance band)."""

    scene: list[int] = field(default_factory=list)
    label: list[int] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    tp: list[list[bool]] = field(default_factory=list)  # per prediction, one flag per DIST_THRESHOLDS_M
    err: list[list[float]] = field(default_factory=list)  # TP errors at 2 m (NaN when not a TP there)
    gt_scene: list[int] = field(default_factory=list)
    gt_label: list[int] = field(default_factory=list)

    def add(self, scene: int, boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray, gt_boxes: np.ndarray,
            gt_labels: np.ndarray) -> None:
        """Match one sample's predictions to its GT per class (greedy by score, strict `<` distance) and store."""
        for c in np.unique(np.concatenate([labels, gt_labels])).astype(int):
            order = np.argsort(-scores[labels == c], kind="stable")
            preds = [(0, c, float(s), b.astype(np.float64)) for b, s in
                     zip(boxes[labels == c][order], scores[labels == c][order], strict=True)]
            gts = [(0, g.astype(np.float64)) for g in gt_boxes[gt_labels == c]]
            flags, errs = [], None
            for thr in DIST_THRESHOLDS_M:
                tp, e = _match(preds, gts, thr)
                flags.append(tp)
                if thr == TP_THRESHOLD_M:
                    errs = _errors_per_pred(tp, e)
            for i, p in enumerate(preds):
                self.scene.append(scene)
                self.label.append(c)
                self.score.append(p[2])
                self.tp.append([bool(f[i]) for f in flags])
                self.err.append(errs[i])
            self.gt_scene += [scene] * len(gts)
            self.gt_label += [c] * len(gts)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"scene": np.asarray(self.scene, np.int64), "label": np.asarray(self.label, np.int64),
                "score": np.asarray(self.score, np.float64),
                "tp": np.asarray(self.tp, bool).reshape(-1, len(DIST_THRESHOLDS_M)),
                "err": np.asarray(self.err, np.float64).reshape(-1, len(TP_ERRORS)),
                "gt_scene": np.asarray(self.gt_scene, np.int64), "gt_label": np.asarray(self.gt_label, np.int64)}


def _errors_per_pred(tp: np.ndarray, errs: dict[str, list[float]]) -> list[list[float]]:
    """TP errors aligned with predictions (`_match` lists them for TPs only, in prediction order)."""
    out = [[float("nan")] * len(TP_ERRORS) for _ in tp]
    for n, i in enumerate(np.flatnonzero(tp)):
        out[i] = [errs[k][n] for k in TP_ERRORS]
    return out


def weighted_ap(score: np.ndarray, tp: np.ndarray, weight: np.ndarray, num_gt: float) -> float:
    """nuScenes AP (`metrics._average_precision`) of predictions pooled with integer weights (bootstrap draws)."""
    keep = weight > 0
    if not keep.any() or num_gt <= 0:
        return 0.0
    order = np.argsort(-score[keep], kind="stable")
    w, hit = weight[keep][order], tp[keep][order]
    ctp, cfp = np.cumsum(w * hit), np.cumsum(w * ~hit)
    precision, recall = ctp / (ctp + cfp), ctp / num_gt
    rec_points = np.linspace(0.0, 1.0, 101)
    return _average_precision(np.interp(rec_points, recall, precision, right=0.0))


def detection_scores(a: dict[str, np.ndarray], scene_weight: np.ndarray) -> dict[str, float]:
    """mAP (mean over thresholds, then over classes with GT), the four TP errors (mean over those classes; a class
    with GT but no TP at 2 m counts 1, as in nuScenes) and the NDS-style summary, for one weighting of scenes."""
    w, gw = scene_weight[a["scene"]], scene_weight[a["gt_scene"]]
    aps, errs = [], []
    for c in np.unique(a["gt_label"]):
        num_gt = float(gw[a["gt_label"] == c].sum())
        if num_gt <= 0:
            continue
        m = a["label"] == c
        aps.append(np.mean([weighted_ap(a["score"][m], a["tp"][m, t], w[m], num_gt)
                            for t in range(len(DIST_THRESHOLDS_M))]))
        hit = a["tp"][m, DIST_THRESHOLDS_M.index(TP_THRESHOLD_M)] & (w[m] > 0)
        errs.append(np.average(a["err"][m][hit], axis=0, weights=w[m][hit]) if hit.any()
                    else np.ones(len(TP_ERRORS)))
    if not aps:
        return {"mAP": float("nan"), "NDS": float("nan"), **{k: float("nan") for k in TP_ERRORS}}
    mean_err = np.mean(errs, axis=0)
    out = {"mAP": float(np.mean(aps)), **{k: float(v) for k, v in zip(TP_ERRORS, mean_err, strict=True)}}
    out["NDS"] = (len(TP_ERRORS) * out["mAP"] + float(np.sum(1 - np.minimum(1.0, mean_err)))) / (2 * len(TP_ERRORS))
    return out


def per_class_ap(a: dict[str, np.ndarray], class_names: tuple[str, ...], num_scenes: int) -> dict[str, dict]:
    """AP and GT count per class with GT (no interval; a breakdown)."""
    w = np.ones(num_scenes)
    out = {}
    for c in np.unique(a["gt_label"]):
        m = a["label"] == c
        num_gt = int((a["gt_label"] == c).sum())
        aps = [weighted_ap(a["score"][m], a["tp"][m, t], w[a["scene"][m]], num_gt) for t in range(len(DIST_THRESHOLDS_M))]
        out[class_names[c]] = {"AP": float(np.mean(aps)), "num_gt": num_gt}
    return out


def interval(lo_hi: tuple[float, float] | None) -> list[float] | None:
    return None if lo_hi is None else [round(lo_hi[0], 6), round(lo_hi[1], 6)]


@dataclass
class RatioRows:
    """Per-scene sums of a numerator and a denominator (IoU = ΣI/ΣU, mean = Σx/n, EPA = Σ(hit - fp/2)/ΣGT)."""

    num: dict[int, float] = field(default_factory=lambda: defaultdict(float))
    den: dict[int, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, scene: int, num: float, den: float) -> None:
        self.num[scene] += float(num)
        self.den[scene] += float(den)

    def value_ci(self, num_scenes: int) -> tuple[float | None, list[float] | None]:
        num = np.array([self.num.get(s, 0.0) for s in range(num_scenes)])
        den = np.array([self.den.get(s, 0.0) for s in range(num_scenes)])
        if den.sum() <= 0:
            return None, None
        return float(num.sum() / den.sum()), interval(ratio_of_sums_ci(num, den))


def ap_value_ci(a: dict[str, np.ndarray], num_scenes: int, keys: tuple[str, ...] = ("mAP", "NDS"),
                resample: bool = True) -> dict[str, tuple[float | None, list[float] | None]]:
    """Point estimates and scene-bootstrap intervals of the AP-based metrics (one PR pass per resample)."""
    point = detection_scores(a, np.ones(num_scenes))
    est: dict[str, list[float]] = {k: [] for k in keys}
    if resample and num_scenes >= 2 and len(a["gt_label"]):
        for row in resample_indices(num_scenes, num_resamples=NUM_RESAMPLES_AP):
            scores = detection_scores(a, np.bincount(row, minlength=num_scenes).astype(np.float64))
            for k in keys:
                est[k].append(scores[k])
    return {k: (None if np.isnan(point[k]) else point[k],
                interval(percentile_interval(np.array(est[k])) if est[k] else None)) for k in keys}
