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
from drivepipe.metrics import (
    DetectionMetric,
    MetricSet,
    PredictionMetric,
    batch_predictions,
    constant_velocity,
    unbatch,
)


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
        preds = batch_predictions(outputs, self.cfg)
        for b, meta in enumerate(batch["meta"]):
            item = unbatch(batch, b)
            sets = [self.overall, self._group("location", meta["location"]),
                    self._group("scenario_type", meta["scenario_type"])]
            for ms in sets:
                ms.update(preds, b, item)
            self._baselines(item)
            if export:
                self._export(meta["token"], preds["det"][b], item, preds["traj"][b], preds["probs"][b])

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
