"""Offline evaluation: run a checkpoint over the val split and feed the streaming metrics, the baselines and
the exports. Breakdowns are kept per location and per scenario type.

Baselines computed in the same run: constant-velocity and constant-acceleration prediction, an empty detector (the
floor) and the untrained model (same architecture, freshly initialised with the training seed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from drivepipe.config import Config
from drivepipe.errors import NonFiniteError
from drivepipe.metrics import DetectionMetric, OccupancyMetric, PredictionMetric, RasterIoU, constant_velocity
from drivepipe.model.heads.detection import decode_detections


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

    def __post_init__(self) -> None:
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

    def _group(self, kind: str, name: str) -> MetricSet:
        return self.groups[kind].setdefault(name, MetricSet.build(self.cfg))

    def _baselines(self, item: dict[str, Any]) -> None:
        a = item["agents"]
        hist, hist_valid = item["agent_hist"][a], item["agent_hist_valid"][a]
        steps = self.cfg.preprocess.future_steps
        one = np.ones((len(hist), 1))
        for metric, accel in ((self.cv, False), (self.ca, True)):
            metric.update(constant_velocity(hist, hist_valid, steps, self.cfg.preprocess.traj_dt_s, accel), one,
                          *item["pred_gt"])
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
    return {
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
        outputs = {k: v.cpu() for k, v in model(inputs).items()}
        bad = [k for k, v in outputs.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            tokens = [m["token"] for m in batch.get("meta", [])][:3]
            raise NonFiniteError(f"model predictions {bad} hold NaN/inf for samples {tokens}; check the inputs "
                                 "(dvc repro preprocess) and the checkpoint")
        evaluator.update(outputs, batch, export=export)
    return evaluator.compute(), evaluator
