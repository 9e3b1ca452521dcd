"""The headline metrics of `reports/evaluate/metrics.json`, each with a 95 % scene-clustered bootstrap interval
(`<name>_ci95: [lo, hi]`), and the breakdowns of `reports/evaluate/breakdowns.json`.

Conventions (see README "Benchmark definitions"):
- detection: nuScenes mAP / NDS-style over the classes with test GT; GT boxes with no lidar point inside and whose
  centre no camera sees are removed before matching (predictions are not filtered); range = the BEV square;
  AP per centre-distance band (0-10, 10-20 m, ...) and recall per lidar-points band in the breakdowns.
- occupancy: IoU ΣI/ΣU over present + future frames, near = |x|, |y| <= 15 m, grid = the whole BEV square.
- prediction: minADE/minFDE over the top-1 (most probable) mode and over all K modes; miss rates in two conventions,
  `miss_rate_endpoint_K` (Argoverse: final-point error > 2 m for every mode) and `miss_rate_anypoint_K` (nuScenes
  MissRate_2_k: every mode has some point with error >= 2 m); `moving_*` on agents whose GT future moves at least
  `evaluate.moving_threshold_m` from where they are now. CV / CA baselines have the same K (evaluate/baselines.py).
- end to end: forecasts from the model's own detections (EPA, see `end_to_end_counts`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from drivepipe.evaluate.scenebook import DetRows, RatioRows, ap_value_ci, interval, per_class_ap
from drivepipe.stats import percentile_interval, resample_indices

NEAR_OCC_M = 15.0  # m, half-side of the "near" occupancy square (FIERY/UniAD near = 30 x 30 m)
DIST_BAND_M = 10.0  # m, width of the detection distance bands
POINT_BANDS = ((1, 5), (5, 20), (20, 100), (100, 10**9))  # lidar points inside a GT box, [lo, hi)
E2E_MATCH_M = 2.0  # m, detection-to-GT centre distance (strict <) for end-to-end forecasting
PRED_KEYS = ("minADE_1", "minFDE_1", "minADE_K", "minFDE_K", "miss_rate_endpoint_K", "miss_rate_anypoint_K")


def agent_errors(traj_AKT2: np.ndarray, probs_AK: np.ndarray, gt_AT2: np.ndarray, valid_AT: np.ndarray,
                 miss_m: float) -> dict[str, np.ndarray]:
    """Per agent with >= 1 valid future step: top-1 and min-over-K ADE/FDE, and both miss conventions."""
    keep = valid_AT.any(axis=1)
    traj, probs, gt, valid = traj_AKT2[keep], probs_AK[keep], gt_AT2[keep], valid_AT[keep]
    disp = np.linalg.norm(traj - gt[:, None], axis=-1)  # (A, K, T)
    v = valid[:, None, :]
    ade = (disp * v).sum(-1) / np.maximum(v.sum(-1), 1)
    last = valid.shape[1] - 1 - np.argmax(valid[:, ::-1], axis=1)
    fde = np.take_along_axis(disp, last[:, None, None].repeat(disp.shape[1], 1), axis=2)[..., 0]
    worst = np.where(v, disp, 0.0).max(-1)  # (A, K) largest point-wise error of each mode
    top = probs.argmax(axis=1)[:, None]
    return {"minADE_1": np.take_along_axis(ade, top, 1)[:, 0], "minFDE_1": np.take_along_axis(fde, top, 1)[:, 0],
            "minADE_K": ade.min(1), "minFDE_K": fde.min(1), "miss_rate_endpoint_K": (fde > miss_m).all(1) * 1.0,
            "miss_rate_anypoint_K": (worst >= miss_m).all(1) * 1.0}


def is_moving(now_A2: np.ndarray, gt_AT2: np.ndarray, valid_AT: np.ndarray, threshold_m: float) -> np.ndarray:
    """(A',) bool for the agents with a valid future: the GT future reaches >= threshold_m from the current spot."""
    keep = valid_AT.any(axis=1)
    dist = np.where(valid_AT, np.linalg.norm(gt_AT2 - now_A2[:, None], axis=-1), 0.0)
    return dist[keep].max(axis=1) >= threshold_m


def end_to_end_counts(det_xy: np.ndarray, det_labels: np.ndarray, det_scores: np.ndarray, det_traj_DKT2: np.ndarray,
                      gt_xy: np.ndarray, gt_labels: np.ndarray, gt_fut_AT2: np.ndarray, gt_valid_AT: np.ndarray,
                      hit_m: float) -> dict[str, Any]:
    """EPA counts of one sample (ViP3D/UniAD): detections (already filtered to agent classes and the e2e score
    threshold) are matched greedily by score to GT agents with a valid future, same class, centre distance < 2 m;
    a matched GT agent is a hit when the matched detection's minFDE_K < hit_m. Unmatched detections are false
    positives. Returns hits, false positives, GT agents and the matched minFDE_K values."""
    has_future = gt_valid_AT.any(axis=1)
    taken = ~has_future.copy()
    fde_matched, hits, fps = [], 0, 0
    for d in np.argsort(-det_scores, kind="stable"):
        dist = np.linalg.norm(gt_xy - det_xy[d], axis=1)
        dist[taken | (gt_labels != det_labels[d])] = np.inf
        g = int(np.argmin(dist)) if len(dist) else -1
        if g < 0 or not dist[g] < E2E_MATCH_M:
            fps += 1
            continue
        taken[g] = True
        valid = gt_valid_AT[g]
        last = int(np.flatnonzero(valid)[-1])
        fde = float(np.linalg.norm(det_traj_DKT2[d, :, last] - gt_fut_AT2[g, last], axis=-1).min())
        fde_matched.append(fde)
        hits += int(fde < hit_m)
    return {"hits": hits, "false_positives": fps, "num_gt": int(has_future.sum()), "fde": fde_matched}


@dataclass
class SceneBook:
    """Everything the headline and breakdown metrics need, recorded sample by sample with a scene index."""

    class_names: tuple[str, ...]
    miss_m: float
    moving_m: float
    scenes: dict[str, int] = field(default_factory=dict)
    logs: set = field(default_factory=set)
    det: DetRows = field(default_factory=DetRows)
    det_bands: dict[str, DetRows] = field(default_factory=lambda: defaultdict(DetRows))
    points_recall: dict[str, RatioRows] = field(default_factory=lambda: defaultdict(RatioRows))
    seg_iu: dict[int, np.ndarray] = field(default_factory=dict)  # scene -> (2, C) summed I, U
    occ: dict[str, RatioRows] = field(default_factory=lambda: defaultdict(RatioRows))
    agents: dict[tuple[str, str, str], RatioRows] = field(default_factory=lambda: defaultdict(RatioRows))
    e2e: dict[str, RatioRows] = field(default_factory=lambda: defaultdict(RatioRows))
    objects: dict[str, set] = field(default_factory=lambda: defaultdict(set))
    num_samples: int = 0
    gt_removed: int = 0

    def scene_of(self, meta: dict[str, Any]) -> int:
        self.num_samples += 1
        self.logs.add(meta.get("log", ""))
        key = f"{meta.get('log', '')}/{meta.get('scene', meta.get('token', ''))}"
        return self.scenes.setdefault(key, len(self.scenes))

    def add_detection(self, scene: int, det: dict[str, np.ndarray], gt_boxes: np.ndarray, gt_labels: np.ndarray,
                      gt_tracks: np.ndarray, gt_points: np.ndarray, log: str) -> None:
        self.det.add(scene, det["boxes"], det["labels"], det["scores"], gt_boxes, gt_labels)
        for c, t in zip(gt_labels, gt_tracks, strict=True):
            self.objects[self.class_names[int(c)]].add((log, int(t)))
        band_of = lambda xy: (np.hypot(xy[:, 0], xy[:, 1]) // DIST_BAND_M).astype(int)  # noqa: E731
        pb, gb = band_of(det["boxes"][:, :2]), band_of(gt_boxes[:, :2])
        for band in np.unique(np.concatenate([pb, gb])):
            name = f"{int(band * DIST_BAND_M)}-{int((band + 1) * DIST_BAND_M)}m"
            self.det_bands[name].add(scene, det["boxes"][pb == band], det["labels"][pb == band],
                                     det["scores"][pb == band], gt_boxes[gb == band], gt_labels[gb == band])
        found = _found_at_2m(det, gt_boxes, gt_labels)
        for lo, hi in POINT_BANDS:
            m = (gt_points >= lo) & (gt_points < hi)
            self.points_recall[f"{lo}-{hi - 1 if hi < 10**9 else 'inf'}"].add(scene, found[m].sum(), m.sum())
        self.points_recall["0 (camera only)"].add(scene, found[gt_points == 0].sum(), (gt_points == 0).sum())

    def add_seg_occ(self, scene: int, seg_inter: np.ndarray, seg_union: np.ndarray, occ_pred: np.ndarray,
                    occ_gt: np.ndarray, near_mask: np.ndarray) -> None:
        prev = self.seg_iu.get(scene, np.zeros((2, len(seg_inter))))
        self.seg_iu[scene] = prev + np.stack([seg_inter, seg_union])
        for name, mask in (("iou_near_15m", near_mask), ("iou_grid", np.ones_like(near_mask))):
            p, g = occ_pred & mask, occ_gt & mask
            self.occ[name].add(scene, (p & g).sum(), (p | g).sum())

    def add_agents(self, predictor: str, scene: int, errors: dict[str, np.ndarray], moving: np.ndarray) -> None:
        for key, values in errors.items():
            for group, mask in (("all", np.ones_like(moving)), ("moving", moving), ("stationary", ~moving)):
                self.agents[(predictor, key, group)].add(scene, values[mask].sum(), int(mask.sum()))

    def add_e2e(self, scene: int, counts: dict[str, Any]) -> None:
        self.e2e["EPA"].add(scene, counts["hits"] - 0.5 * counts["false_positives"], counts["num_gt"])
        self.e2e["minFDE_K_matched"].add(scene, sum(counts["fde"]), len(counts["fde"]))
        self.e2e["recall_matched"].add(scene, len(counts["fde"]), counts["num_gt"])

    # ------------------------------------------------------------------------------------------------- results
    def _mean(self, rows: RatioRows) -> tuple[float | None, list[float] | None]:
        return rows.value_ci(len(self.scenes))

    def miou(self) -> tuple[float | None, list[float] | None]:
        n = len(self.scenes)
        iu = np.stack([self.seg_iu.get(s, np.zeros_like(next(iter(self.seg_iu.values())))) for s in range(n)])

        def miou_of(weights_RS: np.ndarray) -> np.ndarray:
            inter, union = weights_RS @ iu[:, 0], weights_RS @ iu[:, 1]  # (R, C)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.nanmean(np.where(union > 0, inter / union, np.nan), axis=1)

        point = float(miou_of(np.ones((1, n)))[0])
        draws = resample_indices(n) if n >= 2 else None
        if draws is None:
            return point, None
        counts = np.zeros((len(draws), n))
        np.add.at(counts, (np.arange(len(draws))[:, None], draws), 1.0)
        return point, interval(percentile_interval(miou_of(counts)))

    def headline(self) -> dict[str, Any]:
        """metrics.json sections: value and `<name>_ci95` per headline metric."""
        out: dict[str, Any] = {}

        def put(section: str, name: str, value_ci: tuple[float | None, list[float] | None]) -> None:
            d = out
            for part in section.split("."):
                d = d.setdefault(part, {})
            d[name] = None if value_ci[0] is None else round(float(value_ci[0]), 6)
            d[f"{name}_ci95"] = value_ci[1]

        for k, v in ap_value_ci(self.det.arrays(), len(self.scenes)).items():
            put("detection", k, v)
        put("segmentation", "mIoU", self.miou())
        for k in ("iou_near_15m", "iou_grid"):
            put("occupancy", k, self._mean(self.occ[k]))
        for k in PRED_KEYS:
            put("prediction", k, self._mean(self.agents[("model", k, "all")]))
        for k in ("minADE_1", "minFDE_1", "minADE_K", "minFDE_K"):
            put("prediction", f"moving_{k}", self._mean(self.agents[("model", k, "moving")]))
        put("end_to_end", "EPA", self._mean(self.e2e["EPA"]))
        put("end_to_end", "minFDE_K_matched", self._mean(self.e2e["minFDE_K_matched"]))
        for name in ("constant_velocity", "constant_acceleration"):
            for k in ("minFDE_1", "minFDE_K"):
                put(f"baseline.{name}", k, self._mean(self.agents[(name, k, "all")]))
            put(f"baseline.{name}", "moving_minFDE_K", self._mean(self.agents[(name, "minFDE_K", "moving")]))
        return out

    def counts(self) -> dict[str, Any]:
        """What the numbers rest on: samples, scenes, logs, GT boxes, distinct objects per class, agents."""
        def agents(group: str) -> int:
            return int(sum(self.agents[("model", "minADE_K", group)].den.values()))

        return {"samples": self.num_samples, "scenes": len(self.scenes), "logs": len(self.logs),
                "gt_boxes": len(self.det.gt_label), "gt_boxes_removed_unseen": self.gt_removed,
                "distinct_objects": {k: len(v) for k, v in sorted(self.objects.items())},
                "agents": agents("all"), "agents_moving": agents("moving")}

    def breakdowns(self) -> dict[str, Any]:
        """breakdowns.json sections (point values, no intervals): per class, distance band, points band, motion."""
        n = len(self.scenes)
        bands = {}
        for name, rows in sorted(self.det_bands.items(), key=lambda kv: int(kv[0].split("-")[0])):
            point = ap_value_ci(rows.arrays(), n, ("mAP",), resample=False)["mAP"][0]
            bands[name] = {"mAP": point, "num_gt": len(rows.gt_label)}
        recall = {name: {"recall_2m": rows.value_ci(n)[0], "num_gt": int(sum(rows.den.values()))}
                  for name, rows in self.points_recall.items()}
        pred: dict[str, dict[str, float | None]] = defaultdict(dict)
        for (predictor, key, group), rows in sorted(self.agents.items()):
            pred[f"{predictor}/{group}"][key] = rows.value_ci(n)[0]
            pred[f"{predictor}/{group}"]["num_agents"] = int(sum(rows.den.values()))
        return {"detection_per_class": per_class_ap(self.det.arrays(), self.class_names, n),
                "detection_per_distance_band": bands, "detection_recall_per_lidar_points_band": recall,
                "prediction_by_motion": dict(pred),
                "end_to_end": {k: rows.value_ci(n)[0] for k, rows in self.e2e.items()}}


def _found_at_2m(det: dict[str, np.ndarray], gt_boxes: np.ndarray, gt_labels: np.ndarray) -> np.ndarray:
    """(M,) bool: GT box matched at 2 m (strict <, greedy by score, same class) by a kept detection."""
    found = np.zeros(len(gt_boxes), dtype=bool)
    for d in np.argsort(-det["scores"], kind="stable"):
        dist = np.linalg.norm(gt_boxes[:, :2] - det["boxes"][d, :2], axis=1)
        dist[found | (gt_labels != det["labels"][d])] = np.inf
        if len(dist) and dist.min() < 2.0:
            found[int(np.argmin(dist))] = True
    return found
