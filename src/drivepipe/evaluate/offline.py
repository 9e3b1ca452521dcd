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
from drivepipe.evaluate.baselines import kinematic_baseline
from drivepipe.evaluate.headline import NEAR_OCC_M, SceneBook, agent_errors, end_to_end_counts, is_moving
from drivepipe.evaluate.visibility import camera_sees, lidar_points_in_boxes
from drivepipe.metrics import DetectionMetric, OccupancyMetric, PredictionMetric, RasterIoU
from drivepipe.model.heads.detection import decode_detections
from drivepipe.schema import AGENT_CATEGORIES, CATEGORIES, CATEGORY_INDEX


@dataclass
class MetricSet:
    """The streaming metrics of one model (or baseline) over one slice of the data."""

    det: DetectionMetric
    seg: RasterIoU
    occ: OccupancyMetric
    pred: PredictionMetric

    @classmethod
    def build(cls, cfg: Config) -> "MetricSet":
        e = cfg.evaluate
        return cls(DetectionMetric(), RasterIoU(cfg.preprocess.seg_classes, e.seg_threshold),
                   OccupancyMetric(e.occ_threshold),
                   PredictionMetric(cfg.preprocess.traj_dt_s, e.miss_threshold_m, e.mode_score_threshold))

    def compute(self) -> dict[str, Any]:
        det = self.det.compute()
        return {"detection": {k: v for k, v in det.items() if k != "pr_curves"}, "segmentation": self.seg.compute(),
                "occupancy": self.occ.compute(), "prediction": self.pred.compute(), "_pr_curves": det["pr_curves"]}


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
        self.groups = {"location": {}, "scenario_type": {}}
        e, p = self.cfg.evaluate, self.cfg.preprocess
        self.cv = PredictionMetric(p.traj_dt_s, e.miss_threshold_m, e.mode_score_threshold)
        self.ca = PredictionMetric(p.traj_dt_s, e.miss_threshold_m, e.mode_score_threshold)
        self.empty_det = DetectionMetric()
        self.detections, self.ground_truth, self.trajectories = {}, {}, {}

    def update(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any], export: bool = True) -> None:
        dets = decode_detections(outputs, self.cfg, self.cfg.evaluate.score_threshold, self.cfg.model.max_detections)
        seg = outputs["seg.logits"].float().sigmoid().numpy()
        occ = outputs["occ.logits"].float().sigmoid().numpy()
        traj = outputs["pred.traj"].float().numpy()
        probs = outputs["pred.mode_logits"].float().softmax(-1).numpy()
        for b, meta in enumerate(batch["meta"]):
            item = _unbatch(batch, b)
            det = {k: v.numpy() for k, v in dets[b].items()}
            self._book(meta, item, det, seg[b], occ[b], traj[b], probs[b], outputs, b)
            sets = [self.overall, self._group("location", meta["location"]),
                    self._group("scenario_type", meta["scenario_type"])]
            for ms in sets:
                ms.det.update(det["boxes"], det["labels"], det["scores"], item["boxes"], item["box_labels"])
                ms.seg.update(seg[b:b + 1], item["seg"][None])
                ms.occ.update(occ[b], item["occ"])
                ms.pred.update(traj[b][item["agents"]], probs[b][item["agents"]], *item["pred_gt"])
            self._baselines(item)
            if export:
                self._export(meta["token"], det, item, traj[b], probs[b])

    def _book(self, meta: dict, item: dict, det: dict, seg: np.ndarray, occ: np.ndarray, traj: np.ndarray,
              probs: np.ndarray, outputs: dict[str, Any], b: int) -> None:
        """Record one sample in the scene book (and drop unseen GT boxes from `item` for every detection metric)."""
        book, e = self.book, self.cfg.evaluate
        scene = book.scene_of(meta)
        seen = (item["box_points"] > 0) | item["box_camera"]
        book.gt_removed += int((~seen).sum())
        for k in ("boxes", "box_labels", "box_track", "box_points"):
            item[k] = item[k][seen]
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


def _unbatch(batch: dict[str, Any], b: int) -> dict[str, Any]:
    """The valid (unpadded) ground truth of batch item b as numpy arrays."""
    box_valid = batch["box_valid"][b].numpy()
    agents = batch["agent_valid"][b].numpy()
    agent_box = batch["agent_box"][b].numpy()
    boxes = batch["boxes"][b].numpy()
    fut = batch["agent_fut"][b].numpy()
    sizes = boxes[np.clip(agent_box, 0, None)][:, 3:5]
    images = batch["images"]
    return {
        "box_points": lidar_points_in_boxes(batch["points"][b][batch["point_valid"][b]].numpy(), boxes[box_valid]),
        "box_camera": camera_sees(boxes[box_valid], batch["intrinsics"][b].numpy(), batch["cam_to_ego"][b].numpy(),
                                  int(images.shape[-1]), int(images.shape[-2])),
        "boxes": boxes[box_valid], "box_labels": batch["box_labels"][b].numpy()[box_valid],
        "box_track": batch["box_track"][b].numpy()[box_valid],
        "seg": batch["seg"][b].numpy(), "occ": batch["occ"][b].numpy(), "agents": agents,
        "agent_hist": batch["agent_hist"][b].numpy(), "agent_hist_valid": batch["agent_hist_valid"][b].numpy(),
        "agent_labels": batch["agent_labels"][b].numpy(), "agent_track": _agent_tracks(batch, b),
        "pred_gt": (fut[agents][..., :2], batch["agent_fut_valid"][b].numpy()[agents], sizes[agents],
                    fut[agents][..., 2]),
    }


def _agent_tracks(batch: dict[str, Any], b: int) -> np.ndarray:
    idx = np.clip(batch["agent_box"][b].numpy(), 0, None)
    return batch["box_track"][b].numpy()[idx]


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
    for batch in loader:
        inputs = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        bev = model.bev_features(inputs)
        outputs: dict[str, Any] = {}
        for head in model.heads.values():
            outputs.update({k: v.cpu() for k, v in head(bev, inputs).items()})
        if "pred" in model.heads:
            outputs.update(forecast_detections(model, bev, outputs, cfg))
        evaluator.update(outputs, batch, export=export)
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
