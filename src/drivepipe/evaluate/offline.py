"""Offline evaluation: run a checkpoint over the test split and feed the streaming metrics, the scene book (the
headline metrics with scene-bootstrap intervals, `evaluate/headline.py`), the baselines and the exports.
Breakdowns are kept per location and per scenario type.

Baselines computed in the same run: constant-velocity and constant-acceleration prediction with the model's K
modes (`evaluate/baselines.py`), an empty detector (the floor) and the untrained model (same architecture, freshly
initialised with the training seed). End-to-end forecasting runs the prediction head on the model's own detections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from drivepipe.config import Config
from drivepipe.errors import NonFiniteError
from drivepipe.evaluate.baselines import kinematic_baseline
from drivepipe.evaluate.headline import NEAR_OCC_M, SceneBook, agent_errors, end_to_end_counts, is_moving
from drivepipe.metrics import DetectionMetric, MetricSet, PredictionMetric, batch_predictions, unbatch
from drivepipe.model.heads.detection import decode_detections
from drivepipe.schema import AGENT_CATEGORIES, CATEGORIES, CATEGORY_INDEX


@dataclass
class Evaluator:
    """Collects model outputs batch by batch; `compute()` returns the nested metrics dict."""

    cfg: Config
    overall: MetricSet = field(init=False)
    groups: dict[str, dict[str, MetricSet]] = field(init=False)
    cv: PredictionMetric = field(init=False)
    ca: PredictionMetric = field(init=False)
    empty_det: DetectionMetric = field(init=False)
    detections: dict[str, list[dict]] = field(init=False)
    ground_truth: dict[str, list[dict]] = field(init=False)
    trajectories: dict[str, list[dict]] = field(init=False)
    book: SceneBook = field(init=False)

    def __post_init__(self) -> None:
        self.book = SceneBook(CATEGORIES, self.cfg.evaluate.miss_threshold_m, self.cfg.evaluate.moving_threshold_m)
        self.overall = MetricSet.build(self.cfg)
        self.groups = {"location": {}, "scenario_type": {}, "time_of_day": {}, "weather": {}}
        e, p = self.cfg.evaluate, self.cfg.preprocess
        self.cv = PredictionMetric(p.traj_dt_s, e.miss_threshold_m, e.mode_score_threshold)
        self.ca = PredictionMetric(p.traj_dt_s, e.miss_threshold_m, e.mode_score_threshold)
        self.empty_det = DetectionMetric()
        self.detections, self.ground_truth, self.trajectories = {}, {}, {}

    def update(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any], export: bool = True) -> None:
        preds = batch_predictions(outputs, self.cfg)
        for b, meta in enumerate(batch["meta"]):
            item = unbatch(batch, b)
            if all(preds[k] is not None for k in ("det", "seg", "occ", "traj")):
                self._book(meta, item, preds, outputs, b)
            sets = [self.overall, *(self._group(kind, str(meta.get(kind, "unknown"))) for kind in self.groups)]
            for ms in sets:
                ms.update(preds, b, item)
            self._baselines(item)
            if export:
                self._export(meta["token"], preds["det"][b], item, preds["traj"][b], preds["probs"][b])

    def _book(self, meta: dict, item: dict, preds: dict[str, Any], outputs: dict[str, Any], b: int) -> None:
        """Record one sample in the scene book."""
        book, e = self.book, self.cfg.evaluate
        det, seg, occ, traj, probs = (preds["det"][b], preds["seg"][b], preds["occ"][b], preds["traj"][b],
                                      preds["probs"][b])
        scene = book.scene_of(meta)
        book.gt_removed += item["gt_removed"]  # unseen GT boxes, already dropped by metrics.unbatch
        book.add_detection(scene, det, item["boxes"], item["box_labels"], item["box_track"], item["box_points"],
                           meta.get("log", ""))
        pred_seg, tgt_seg = seg >= e.seg_threshold, item["seg"] > 0
        book.add_seg_occ(scene, (pred_seg & tgt_seg).sum((1, 2)), (pred_seg | tgt_seg).sum((1, 2)),
                         occ >= e.occ_threshold, item["occ"] > 0, self._near)
        a = item["agents"]
        gt, valid = item["pred_gt"][0], item["pred_gt"][1]
        moving = is_moving(item["agent_hist"][a][:, -1, :2], gt, valid, e.moving_threshold_m)
        book.add_agents("model", scene, agent_errors(traj[a], probs[a], gt, valid, e.miss_threshold_m), moving)
        for name, (btraj, bprobs) in self._baseline_modes(item).items():
            book.add_agents(name, scene, agent_errors(btraj, bprobs, gt, valid, e.miss_threshold_m), moving)
        if "e2e.traj" in outputs:
            d = outputs["e2e.det"][b]
            book.add_e2e(scene, end_to_end_counts(
                d["boxes"][:, :2], d["labels"], d["scores"], outputs["e2e.traj"][b],
                item["agent_hist"][a][:, -1, :2], item["agent_labels"][a], gt, valid, e.miss_threshold_m))

    @property
    def _near(self) -> np.ndarray:
        p = self.cfg.preprocess
        c = -p.bev_extent_m + (np.arange(p.bev_size) + 0.5) * p.bev_resolution_m
        return (np.abs(c)[:, None] <= NEAR_OCC_M) & (np.abs(c)[None, :] <= NEAR_OCC_M)

    def _baseline_modes(self, item: dict[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        a, p = item["agents"], self.cfg.preprocess
        hist, hist_valid = item["agent_hist"][a], item["agent_hist_valid"][a]
        return {name: kinematic_baseline(hist, hist_valid, p.future_steps, p.traj_dt_s, self.cfg.model.num_modes,
                                         accel) for name, accel in (("constant_velocity", False),
                                                                    ("constant_acceleration", True))}

    def _group(self, kind: str, name: str) -> MetricSet:
        return self.groups[kind].setdefault(name, MetricSet.build(self.cfg))

    def _baselines(self, item: dict[str, Any]) -> None:
        modes = self._baseline_modes(item)
        for metric, name in ((self.cv, "constant_velocity"), (self.ca, "constant_acceleration")):
            metric.update(*modes[name], *item["pred_gt"])
        empty = np.zeros((0, 9))
        self.empty_det.update(empty, np.zeros(0, int), np.zeros(0), item["boxes"], item["box_labels"])

    def _export(self, token: str, det: dict, item: dict, traj: np.ndarray, probs: np.ndarray) -> None:
        from drivepipe.evaluate.export import box_records, trajectory_records

        self.detections[token] = box_records(token, det["boxes"], det["labels"], det["scores"])
        self.ground_truth[token] = box_records(token, item["boxes"], item["box_labels"], None)
        self.trajectories[token] = trajectory_records(item, traj, probs)

    def compute(self) -> dict[str, Any]:
        results = self.overall.compute()
        pr_curves = results.pop("_pr_curves")
        results["baseline"] = {
            "constant_velocity": _pred_summary(self.cv.compute()),
            "constant_acceleration": _pred_summary(self.ca.compute()),
            "empty_detector": {"mAP": self.empty_det.compute()["mAP"]},
        }
        results["breakdown"] = {kind: {name: _summary(ms.compute()) for name, ms in sorted(groups.items())}
                                for kind, groups in self.groups.items()}
        results["_pr_curves"] = pr_curves
        return results


def _pred_summary(p: dict[str, Any]) -> dict[str, Any]:
    keys = ("minADE", "minFDE", "miss_rate_2m", "collision_rate", "ade_by_horizon", "fde_by_horizon")
    return {k: p.get(k) for k in keys}


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    return {"mAP": m["detection"]["mAP"], "mIoU": m["segmentation"]["mIoU"], "occupancy_iou": m["occupancy"]["iou"],
            "minADE": m["prediction"]["minADE"], "minFDE": m["prediction"]["minFDE"],
            "num_agents": m["prediction"]["num_agents"]}


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, loader: Any, cfg: Config, export: bool = True) -> tuple[dict, Evaluator]:
    """Run `model` (eval mode, CPU or its device) over `loader` and compute every metric."""
    model.eval()
    device = next(model.parameters()).device
    evaluator = Evaluator(cfg)
    captured: dict[str, torch.Tensor] = {}  # the fused BEV of the forward pass, reused for end-to-end forecasting
    e2e = "pred" in getattr(model, "heads", {}) and hasattr(model, "backbone")
    hook = model.backbone.register_forward_hook(lambda m, i, out: captured.update(bev=out)) if e2e else None
    try:
        for batch in loader:
            inputs = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
            outputs: dict[str, Any] = {k: v.cpu() for k, v in model(inputs).items()}
            bad = [k for k, v in outputs.items() if v.is_floating_point() and not torch.isfinite(v).all()]
            if bad:
                tokens = [m["token"] for m in batch.get("meta", [])][:3]
                raise NonFiniteError(f"model predictions {bad} hold NaN/inf for samples {tokens}; check the inputs "
                                     "(dvc repro preprocess) and the checkpoint")
            if e2e and "det.heatmap" in outputs:
                outputs.update(forecast_detections(model, captured["bev"], outputs, cfg))
            evaluator.update(outputs, batch, export=export)
    finally:
        if hook is not None:
            hook.remove()
    return evaluator.compute(), evaluator


def forecast_detections(model: torch.nn.Module, bev: torch.Tensor, outputs: dict[str, torch.Tensor],
                        cfg: Config) -> dict[str, Any]:
    """End-to-end forecasting: the prediction head run on the model's own detections of agent classes (score >=
    evaluate.e2e_score_threshold) instead of GT agents. A detection has no tracked past in a one-frame sample,
    so its history is its detected position, yaw and velocity extrapolated backwards (constant velocity).

    Returns per sample lists: e2e.det (the detections used: boxes, labels, scores) and e2e.traj (D, K, Tf, 2).
    """
    p = cfg.preprocess
    dets = decode_detections(outputs, cfg, cfg.evaluate.e2e_score_threshold, cfg.model.max_detections)
    agent_ids = torch.tensor([CATEGORY_INDEX[c] for c in AGENT_CATEGORIES])
    index = [torch.nonzero(torch.isin(d["labels"], agent_ids)).flatten().numpy() for d in dets]
    num = max(1, max(len(i) for i in index))
    hist = torch.zeros(len(dets), num, p.history_steps + 1, 3)
    labels = torch.full((len(dets), num), -1, dtype=torch.long)
    back = (torch.arange(p.history_steps, -1, -1) * p.traj_dt_s)[:, None]  # (Th + 1, 1) s before now
    for b, (d, idx) in enumerate(zip(dets, index, strict=True)):
        boxes = d["boxes"][idx]
        hist[b, : len(idx), :, :2] = boxes[:, None, :2] - back[None] * boxes[:, None, 7:9]
        hist[b, : len(idx), :, 2] = boxes[:, None, 6]
        labels[b, : len(idx)] = d["labels"][idx]
    batch = {"agent_hist": hist.to(bev.device), "agent_hist_valid": (labels >= 0)[..., None].expand(
        -1, -1, p.history_steps + 1).to(bev.device), "agent_labels": labels.to(bev.device)}
    traj = model.heads["pred"](bev, batch)["pred.traj"].cpu().numpy()
    used = [{k: v[i].numpy() for k, v in d.items()} for d, i in zip(dets, index, strict=True)]
    return {"e2e.det": used, "e2e.traj": [traj[b, : len(i)] for b, i in enumerate(index)]}
