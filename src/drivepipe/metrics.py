"""Streaming evaluation metrics: `reset()` / `update(...)` / `compute() -> dict[str, float]`. Pure numpy, no logging.

Detection follows the nuScenes definition: predictions matched to ground truth by BEV centre distance (thresholds
0.5, 1, 2, 4 m, strict `<`), greedily in descending score over the whole split; precision interpolated at 101 recall points; AP
is the mean of (precision - 0.1)+ over recall > 0.1, normalised by 0.9; mAP averages thresholds and the classes
that have ground truth. True-positive errors are taken at 2 m: translation (m), scale (1 - IoU of the boxes aligned
on centre and yaw), orientation (|yaw difference| in rad), velocity (m/s); NDS-style summary = (4 mAP + sum(1 - min(1, err))) / 8
(nuScenes weighs mAP and the true-positive scores half and half; we have no attribute error).

Prediction (per agent with a valid future): minADE / minFDE over the top-1 and all K modes; miss rate = share of
agents with minFDE_K > miss threshold; a mode is *confident* when its probability >= mode threshold; mode precision
= confident modes whose FDE <= miss threshold / confident modes; mode recall = agents with at least one such
confident mode / agents; collision rate = share of agents whose most likely trajectory overlaps another agent's
ground-truth footprint at the same future step.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from drivepipe.schema import CATEGORIES
from drivepipe.utils.geometry import box_corners_2d, wrap_angle
from drivepipe.utils.visibility import seen_by_sensors

DIST_THRESHOLDS_M = (0.5, 1.0, 2.0, 4.0)
TP_THRESHOLD_M = 2.0
MIN_RECALL = MIN_PRECISION = 0.1
TP_ERRORS = ("trans_err", "scale_err", "orient_err", "vel_err")

if TYPE_CHECKING:
    from drivepipe.config import Config


class DetectionMetric:
    """nuScenes-style mAP over ego-frame boxes (x, y, z, l, w, h, yaw, vx, vy)."""

    def __init__(self, class_names: tuple[str, ...] = CATEGORIES) -> None:
        self.class_names = class_names
        self.reset()

    def reset(self) -> None:
        self._preds: list[tuple[int, int, float, np.ndarray]] = []  # (sample, class, score, box)
        self._gts: dict[int, list[tuple[int, np.ndarray]]] = defaultdict(list)  # class -> [(sample, box)]
        self._num_samples = 0

    def update(self, pred_boxes: np.ndarray, pred_labels: np.ndarray, pred_scores: np.ndarray,
               gt_boxes: np.ndarray, gt_labels: np.ndarray) -> None:
        """Add one sample: predictions (D, 9), (D,), (D,) and ground truth (M, 9), (M,)."""
        sid = self._num_samples
        self._num_samples += 1
        for box, label, score in zip(pred_boxes, pred_labels, pred_scores, strict=True):
            self._preds.append((sid, int(label), float(score), np.asarray(box, dtype=np.float64)))
        for box, label in zip(gt_boxes, gt_labels, strict=True):
            self._gts[int(label)].append((sid, np.asarray(box, dtype=np.float64)))

    def compute(self) -> dict:
        out: dict = {"per_class": {}, "pr_curves": {}}
        aps_all, errors_all = [], defaultdict(list)
        for c, name in enumerate(self.class_names):
            gts = self._gts.get(c, [])
            if not gts:
                continue
            preds = sorted((p for p in self._preds if p[1] == c), key=lambda p: -p[2])
            per_thr = {}
            for thr in DIST_THRESHOLDS_M:
                tp, errs = _match(preds, gts, thr)
                recall, precision = _pr_curve(tp, len(gts))
                per_thr[thr] = _average_precision(precision)
                if thr == TP_THRESHOLD_M:
                    out["pr_curves"][name] = {"recall": recall.tolist(), "precision": precision.tolist()}
                    for k in TP_ERRORS:  # a class with GT but no match at 2 m counts error 1 (nuScenes)
                        errors_all[k].append(float(np.mean(errs[k])) if errs[k] else 1.0)
            ap = float(np.mean(list(per_thr.values())))
            aps_all.append(ap)
            out["per_class"][name] = {"AP": ap, **{f"AP@{t}m": v for t, v in per_thr.items()}, "num_gt": len(gts)}
        out["mAP"] = float(np.mean(aps_all)) if aps_all else 0.0
        tp_errs = {k: (float(np.mean(v)) if v else 1.0) for k, v in errors_all.items()}
        for k in TP_ERRORS:
            tp_errs.setdefault(k, 1.0)
        out.update(tp_errs)
        # Half the weight on mAP and half on the TP scores, as in nuScenes (which also has an attribute error).
        out["NDS"] = (len(TP_ERRORS) * out["mAP"] + sum(1 - min(1.0, tp_errs[k]) for k in TP_ERRORS)) / (
            2 * len(TP_ERRORS))
        return out


def _match(preds: list, gts: list, thr: float) -> tuple[np.ndarray, dict[str, list[float]]]:
    """Greedy matching in descending score (`preds` come sorted); returns the TP flag per prediction and TP errors.

    Matching is per sample: each prediction takes the nearest GT box of its sample not yet taken, if that is closer
    than `thr`. A prediction with no GT box of its sample within `thr` can never match, so only the others are
    walked (one distance matrix per sample)."""
    gt_of: dict[int, list[int]] = defaultdict(list)
    for j, (sid, _) in enumerate(gts):
        gt_of[sid].append(j)
    pred_of: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(preds):
        if p[0] in gt_of:
            pred_of[p[0]].append(i)
    tp = np.zeros(len(preds), dtype=bool)
    pairs: list[tuple[int, int, float]] = []
    for sid, rows in pred_of.items():
        idx = gt_of[sid]
        pc = np.array([preds[i][3][:2] for i in rows])
        gc = np.array([gts[j][1][:2] for j in idx])
        dist = np.hypot(pc[:, None, 0] - gc[None, :, 0], pc[:, None, 1] - gc[None, :, 1])
        taken = np.zeros(len(idx), dtype=bool)
        for r in np.flatnonzero((dist < thr).any(axis=1)).tolist():
            d = np.where(taken, np.inf, dist[r])
            k = int(np.argmin(d))  # the first minimum in GT index order, as a scan of the untaken boxes
            if d[k] < thr:  # strict, as the nuScenes devkit
                taken[k] = tp[rows[r]] = True
                pairs.append((rows[r], idx[k], float(d[k])))
                if taken.all():
                    break
    errs: dict[str, list[float]] = {k: [] for k in TP_ERRORS}
    for i, j, d in sorted(pairs):  # in prediction order
        box, g = preds[i][3], gts[j][1]
        errs["trans_err"].append(d)
        errs["scale_err"].append(1.0 - _aligned_iou(box[3:6], g[3:6]))
        errs["orient_err"].append(float(abs(wrap_angle(box[6] - g[6]))))
        errs["vel_err"].append(float(np.hypot(*(box[7:9] - g[7:9]))))
    return tp, errs


def _aligned_iou(size_a: np.ndarray, size_b: np.ndarray) -> float:
    inter = float(np.prod(np.minimum(size_a, size_b)))
    return inter / float(np.prod(size_a) + np.prod(size_b) - inter)


def _pr_curve(tp: np.ndarray, num_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision at 101 evenly spaced recall points (0 beyond the highest recall reached)."""
    rec_points = np.linspace(0.0, 1.0, 101)
    if len(tp) == 0:
        return rec_points, np.zeros(101)
    ctp = np.cumsum(tp)
    cfp = np.cumsum(~tp)
    precision = ctp / (ctp + cfp)
    recall = ctp / num_gt
    return rec_points, np.interp(rec_points, recall, precision, right=0.0)


def _average_precision(precision_101: np.ndarray) -> float:
    prec = precision_101[round(100 * MIN_RECALL) + 1:] - MIN_PRECISION
    return float(np.clip(prec, 0.0, None).mean() / (1.0 - MIN_PRECISION))


class RasterIoU:
    """Per-class IoU of binary BEV rasters; probabilities are thresholded at `threshold`."""

    def __init__(self, class_names: list[str], threshold: float = 0.5) -> None:
        self.class_names, self.threshold = list(class_names), threshold
        self.reset()

    def reset(self) -> None:
        self._inter = np.zeros(len(self.class_names))
        self._union = np.zeros(len(self.class_names))

    def update(self, probs_BCHW: np.ndarray, target_BCHW: np.ndarray) -> None:
        pred = probs_BCHW >= self.threshold
        tgt = target_BCHW > 0
        self._inter += (pred & tgt).sum(axis=(0, 2, 3))
        self._union += (pred | tgt).sum(axis=(0, 2, 3))

    def compute(self) -> dict:
        iou = np.where(self._union > 0, self._inter / np.maximum(self._union, 1), np.nan)
        per_class = {n: (None if np.isnan(v) else float(v)) for n, v in zip(self.class_names, iou, strict=True)}
        valid = iou[~np.isnan(iou)]
        return {"mIoU": float(valid.mean()) if valid.size else 0.0, "per_class": per_class}


class OccupancyMetric:
    """IoU, accuracy, precision and recall of binary occupancy grids (all frames pooled)."""

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        self._tp = self._fp = self._fn = self._tn = 0

    def update(self, probs: np.ndarray, target: np.ndarray) -> None:
        pred, tgt = probs >= self.threshold, target > 0
        self._tp += int((pred & tgt).sum())
        self._fp += int((pred & ~tgt).sum())
        self._fn += int((~pred & tgt).sum())
        self._tn += int((~pred & ~tgt).sum())

    def compute(self) -> dict:
        tp, fp, fn, tn = self._tp, self._fp, self._fn, self._tn
        return {"iou": tp / max(tp + fp + fn, 1), "accuracy": (tp + tn) / max(tp + fp + fn + tn, 1),
                "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1)}


class PredictionMetric:
    """Multi-modal trajectory metrics for agents with at least one valid future step (see module docstring)."""

    def __init__(self, dt_s: float, miss_threshold_m: float = 2.0, mode_threshold: float = 0.2) -> None:
        self.dt_s, self.miss_m, self.mode_thr = dt_s, miss_threshold_m, mode_threshold
        self.reset()

    def reset(self) -> None:
        self._rows: dict[str, list[float]] = defaultdict(list)
        self._step_err: list[np.ndarray] = []
        self._step_valid: list[np.ndarray] = []
        self._confident = self._confident_hits = 0

    def update(self, traj_AKT2: np.ndarray, probs_AK: np.ndarray, gt_AT2: np.ndarray, valid_AT: np.ndarray,
               sizes_A2: np.ndarray | None = None, gt_yaw_AT: np.ndarray | None = None) -> None:
        """One sample's agents. sizes_A2 (length, width) and gt_yaw_AT enable the collision rate."""
        keep = valid_AT.any(axis=1)
        if not keep.any():
            return
        disp = np.linalg.norm(traj_AKT2 - gt_AT2[:, None], axis=-1)  # (A, K, T)
        v = valid_AT[:, None, :]
        ade = (disp * v).sum(-1) / np.maximum(v.sum(-1), 1)  # (A, K)
        last = valid_AT.shape[1] - 1 - np.argmax(valid_AT[:, ::-1], axis=1)  # last valid step per agent
        fde = np.take_along_axis(disp, last[:, None, None].repeat(disp.shape[1], 1), axis=2)[..., 0]  # (A, K)
        top = probs_AK.argmax(axis=1)
        ar = np.arange(len(top))
        best = ade.argmin(axis=1)
        for a in np.flatnonzero(keep):
            self._rows["ade1"].append(ade[a, top[a]])
            self._rows["fde1"].append(fde[a, top[a]])
            self._rows["adeK"].append(ade[a].min())
            self._rows["fdeK"].append(fde[a].min())
            self._rows["miss"].append(float(fde[a].min() > self.miss_m))
            conf = probs_AK[a] >= self.mode_thr
            hits = conf & (fde[a] <= self.miss_m)
            self._confident += int(conf.sum())
            self._confident_hits += int(hits.sum())
            self._rows["mode_recall"].append(float(hits.any()))
        self._step_err.append((disp[ar, best] * valid_AT)[keep])
        self._step_valid.append(valid_AT[keep])
        if sizes_A2 is not None and gt_yaw_AT is not None:
            hits = _collisions(traj_AKT2[ar, top], gt_AT2, gt_yaw_AT, valid_AT, sizes_A2)
            self._rows["collision"].extend(hits[keep].astype(float).tolist())

    def compute(self) -> dict:
        def mean(k: str) -> float | None:
            return float(np.mean(self._rows[k])) if self._rows[k] else None

        out = {"minADE_1": mean("ade1"), "minFDE_1": mean("fde1"), "minADE": mean("adeK"), "minFDE": mean("fdeK"),
               "miss_rate_2m": mean("miss"), "mode_recall": mean("mode_recall"),
               "mode_precision": self._confident_hits / self._confident if self._confident else 0.0,
               "collision_rate": mean("collision"), "num_agents": len(self._rows["adeK"])}
        if self._step_err:
            err, val = np.concatenate(self._step_err), np.concatenate(self._step_valid)
            out["ade_by_horizon"] = ((err.cumsum(1) / np.maximum(val.cumsum(1), 1)).sum(0) /
                                     np.maximum((val.sum(1, keepdims=True) > 0).sum(0), 1)).tolist()
            out["fde_by_horizon"] = (err.sum(0) / np.maximum(val.sum(0), 1)).tolist()
        return out


def _collisions(traj_AT2: np.ndarray, gt_AT2: np.ndarray, gt_yaw_AT: np.ndarray, valid_AT: np.ndarray,
                sizes_A2: np.ndarray) -> np.ndarray:
    """(A,) bool: agent a's predicted path overlaps another agent's GT footprint at the same step."""
    import shapely

    num_agents, steps = valid_AT.shape
    out = np.zeros(num_agents, dtype=bool)
    step = np.diff(traj_AT2, axis=1, prepend=traj_AT2[:, :1])  # (A, T, 2); first step has no direction
    moving = np.linalg.norm(step, axis=-1) > 1e-3
    heading = np.where(moving, np.arctan2(step[..., 1], step[..., 0]), gt_yaw_AT)
    not_self = ~np.eye(num_agents, dtype=bool)
    length, width = np.repeat(sizes_A2[:, 0], steps), np.repeat(sizes_A2[:, 1], steps)  # every step at once
    gt_polys = shapely.polygons(box_corners_2d(gt_AT2.reshape(-1, 2), length, width, gt_yaw_AT.reshape(-1))
                                ).reshape(num_agents, steps)
    pred_polys = shapely.polygons(box_corners_2d(traj_AT2.reshape(-1, 2), length, width, heading.reshape(-1))
                                  ).reshape(num_agents, steps)
    for t in range(steps):
        hits = shapely.intersects(pred_polys[:, t, None], gt_polys[None, :, t])  # (A, A): prediction a vs GT of b
        out |= (hits & not_self & valid_AT[None, :, t]).any(axis=1)
    return out


def constant_velocity(hist_AH3: np.ndarray, hist_valid_AH: np.ndarray, steps: int, dt_s: float,
                      accel: bool = False) -> np.ndarray:
    """Constant-velocity (or constant-acceleration) extrapolation of agent histories -> (A, 1, steps, 2)."""
    p0, p1, p2 = hist_AH3[:, -1, :2], hist_AH3[:, -2, :2], hist_AH3[:, -3, :2] if hist_AH3.shape[1] > 2 else None
    v1 = np.where(hist_valid_AH[:, -2:-1], (p0 - p1) / dt_s, 0.0)
    t = (np.arange(1, steps + 1) * dt_s)[None, :, None]
    out = p0[:, None] + v1[:, None] * t
    if accel and p2 is not None:
        v0 = np.where(hist_valid_AH[:, -3:-2] & hist_valid_AH[:, -2:-1], (p1 - p2) / dt_s, v1)
        out = out + 0.5 * ((v1 - v0) / dt_s)[:, None] * t**2
    return out[:, None]


# ------------------------------------------------------------------------------ one model over one slice of data
@dataclass
class MetricSet:
    """The streaming metrics of one model (or baseline) over one slice of the data, with the evaluate.* thresholds;
    the same definitions for the trainer's validation (which picks `best`) and for the evaluate stage."""

    det: DetectionMetric
    seg: RasterIoU
    occ: OccupancyMetric
    pred: PredictionMetric

    @classmethod
    def build(cls, cfg: Config) -> MetricSet:
        e = cfg.evaluate
        return cls(DetectionMetric(), RasterIoU(cfg.preprocess.seg_classes, e.seg_threshold),
                   OccupancyMetric(e.occ_threshold),
                   PredictionMetric(cfg.preprocess.traj_dt_s, e.miss_threshold_m, e.mode_score_threshold))

    def update(self, preds: dict[str, Any], b: int, item: dict[str, Any]) -> None:
        """Feed batch item b: `preds` from `batch_predictions`, `item` from `unbatch`; absent heads are skipped."""
        if preds["det"] is not None:
            det = preds["det"][b]
            self.det.update(det["boxes"], det["labels"], det["scores"], item["boxes"], item["box_labels"])
        if preds["seg"] is not None:
            self.seg.update(preds["seg"][b:b + 1], item["seg"][None])
        if preds["occ"] is not None:
            self.occ.update(preds["occ"][b], item["occ"])
        if preds["traj"] is not None:
            a = item["agents"]
            self.pred.update(preds["traj"][b][a], preds["probs"][b][a], *item["pred_gt"])

    def compute(self) -> dict[str, Any]:
        det = self.det.compute()
        return {"detection": {k: v for k, v in det.items() if k != "pr_curves"}, "segmentation": self.seg.compute(),
                "occupancy": self.occ.compute(), "prediction": self.pred.compute(), "_pr_curves": det["pr_curves"]}


def batch_predictions(outputs: dict[str, Any], cfg: Config) -> dict[str, Any]:
    """CPU model outputs -> numpy: decoded detections (evaluate.score_threshold) as a list of per-sample dicts, seg /
    occ probabilities, trajectories and mode probabilities; None for a head the model does not have."""
    from drivepipe.model.heads.detection import decode_detections

    def sig(key: str) -> np.ndarray | None:
        return outputs[key].float().sigmoid().numpy() if key in outputs else None

    dets = None
    if "det.heatmap" in outputs:
        raw = decode_detections(outputs, cfg, cfg.evaluate.score_threshold, cfg.model.max_detections)
        dets = [{k: v.numpy() for k, v in d.items()} for d in raw]
    has_pred = "pred.traj" in outputs
    return {"det": dets, "seg": sig("seg.logits"), "occ": sig("occ.logits"),
            "traj": outputs["pred.traj"].float().numpy() if has_pred else None,
            "probs": outputs["pred.mode_logits"].float().softmax(-1).numpy() if has_pred else None}


def unbatch(batch: dict[str, Any], b: int) -> dict[str, Any]:
    """The valid (unpadded) ground truth of item b of a CPU batch (`sample.collate`) as numpy arrays."""
    box_valid = batch["box_valid"][b].numpy()
    agents = batch["agent_valid"][b].numpy()
    agent_box = batch["agent_box"][b].numpy()
    boxes = batch["boxes"][b].numpy()
    fut = batch["agent_fut"][b].numpy()
    sizes = boxes[np.clip(agent_box, 0, None)][:, 3:5]
    # GT boxes with no lidar point and no camera view of the centre are not ground truth (nuScenes drops boxes
    # without points): the same rule for validation (val/score picks `best`) and evaluate
    points, camera = seen_by_sensors(batch, b, boxes[box_valid])
    seen = (points > 0) | camera
    return {
        "boxes": boxes[box_valid][seen], "box_labels": batch["box_labels"][b].numpy()[box_valid][seen],
        "box_track": batch["box_track"][b].numpy()[box_valid][seen], "box_points": points[seen],
        "gt_removed": int((~seen).sum()),
        "seg": batch["seg"][b].numpy(), "occ": batch["occ"][b].numpy(), "agents": agents,
        "agent_hist": batch["agent_hist"][b].numpy(), "agent_hist_valid": batch["agent_hist_valid"][b].numpy(),
        "agent_labels": batch["agent_labels"][b].numpy(), "agent_track": _agent_tracks(batch, b),
        "pred_gt": (fut[agents][..., :2], batch["agent_fut_valid"][b].numpy()[agents], sizes[agents],
                    fut[agents][..., 2]),
    }


def _agent_tracks(batch: dict[str, Any], b: int) -> np.ndarray:
    idx = np.clip(batch["agent_box"][b].numpy(), 0, None)
    return batch["box_track"][b].numpy()[idx]
