"""The multi-task camera + lidar BEV model: camera encoder + lift-splat and/or pillar encoder -> BEV backbone ->
task heads (an nn.ModuleDict keyed by task name).

Shape legend: B = batch, N = cameras, H, W = image px, P = points, C = bev_channels, S = bev_size.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from drivepipe.config import Config
from drivepipe.model.bev_backbone import BEVBackbone
from drivepipe.model.camera_encoder import CameraEncoder
from drivepipe.model.heads.detection import DetectionHead
from drivepipe.model.heads.occupancy import OccupancyHead
from drivepipe.model.heads.planning import PlanningHead
from drivepipe.model.heads.prediction import PredictionHead
from drivepipe.model.heads.segmentation import SegmentationHead
from drivepipe.model.lift_splat import LiftSplat
from drivepipe.model.pillar_encoder import PillarEncoder
from drivepipe.sample import ROUTE_POINTS


class DrivingModel(nn.Module):
    """forward(batch) -> {det.heatmap, det.reg, seg.logits, occ.logits, pred.traj, pred.log_sigma,
    pred.mode_logits[, plan.traj]}; see ARCHITECTURE.md for the shapes. All sizes come from `cfg`."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        pre, m = cfg.preprocess, cfg.model
        self.cfg = cfg
        self.camera_encoder: CameraEncoder | None = None
        self.lift_splat: LiftSplat | None = None
        self.pillar_encoder: PillarEncoder | None = None
        if m.use_camera:
            self.camera_encoder = CameraEncoder(m.backbone, m.feature_downsample, m.num_depth_bins,
                                                m.image_channels, m.trunk_weights_path)
            self.lift_splat = LiftSplat(pre, m)
        if m.use_lidar:
            self.pillar_encoder = PillarEncoder(pre, m.pillar_channels)
        self.backbone = BEVBackbone(m.image_channels if m.use_camera else 0,
                                    m.pillar_channels if m.use_lidar else 0, m.bev_channels, m.bev_blocks)
        C = m.bev_channels
        heads: dict[str, nn.Module] = {
            "det": DetectionHead(C),
            "seg": SegmentationHead(C, len(pre.seg_classes)),
            "occ": OccupancyHead(C, pre.occupancy_future_steps),
            "pred": PredictionHead(C, m.agent_hidden, m.num_modes, pre.history_steps, pre.future_steps,
                                   pre.bev_extent_m),
        }
        if m.planning_head:
            heads["plan"] = PlanningHead(C, m.agent_hidden, ROUTE_POINTS, pre.future_steps)
        self.heads = nn.ModuleDict(heads)

    def bev_features(self, batch: dict[str, Any]) -> torch.Tensor:
        """Fused BEV features (B, C, S, S) from the enabled sensor branches."""
        camera_bev = lidar_bev = None
        if self.camera_encoder is not None and self.lift_splat is not None:
            depth_logits, context = self.camera_encoder(batch["images"])  # (B, N, D, h, w), (B, N, Ci, h, w)
            camera_bev = self.lift_splat(depth_logits, context, batch["intrinsics"], batch["cam_to_ego"])
        if self.pillar_encoder is not None:
            lidar_bev = self.pillar_encoder(batch["points"], batch["pillar_index"])
        return self.backbone(camera_bev, lidar_bev)

    def perceive(self, batch: dict[str, Any], heads: tuple[str, ...] | None = None
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(BEV features (B, C, S, S), outputs of the heads named in `heads` (default: every head) but agent
        prediction): the first half of a closed-loop step, whose detections are tracked into the agent arrays that
        `predict_agents` then reads from the batch. The closed-loop agent asks only for what it uses."""
        bev_BCSS = self.bev_features(batch)
        outputs: dict[str, torch.Tensor] = {}
        for name, head in self.heads.items():
            if name != "pred" and (heads is None or name in heads):
                outputs.update(head(bev_BCSS, batch))
        return bev_BCSS, outputs

    def predict_agents(self, bev_BCSS: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """`pred.*` outputs for the agents in `batch` (agent_hist, agent_labels, ...) from `perceive`'s features."""
        return self.heads["pred"](bev_BCSS, batch)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """batch from `drivepipe.sample.collate` (on the model's device) -> named predictions."""
        bev_BCSS = self.bev_features(batch)
        outputs: dict[str, torch.Tensor] = {}
        for head in self.heads.values():
            outputs.update(head(bev_BCSS, batch))
        return outputs


def build_model(cfg: Config) -> DrivingModel:
    """Construct the model described by `cfg.model` for the grid and horizons of `cfg.preprocess`."""
    return DrivingModel(cfg)
