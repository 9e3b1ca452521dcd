"""CenterPoint-style detection head and its decoder.

Shape legend: B = batch, C = BEV channels, K = classes (len(CATEGORIES)), S = bev_size, D = detections.
Regression channels (REG_*): dx, dy (sub-cell offset of the centre, cells, in [0, 1)), z (m), log l, log w, log h
(m), sin yaw, cos yaw, vx, vy (m/s); all in the ego frame.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from drivepipe.config import Config
from drivepipe.schema import CATEGORIES

NUM_REG = 10
HEATMAP_BIAS_INIT = -2.19  # sigmoid(-2.19) ~ 0.1: a low prior for "object centre here" (CenterNet/CenterPoint)


def _branch(c_in: int, c_out: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, hidden, 3, 1, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
                         nn.Conv2d(hidden, c_out, 1))


class DetectionHead(nn.Module):
    """BEV features (B, C, S, S) -> det.heatmap (B, K, S, S) logits and det.reg (B, 10, S, S)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.heatmap = _branch(channels, len(CATEGORIES), channels)
        self.reg = _branch(channels, NUM_REG, channels)
        nn.init.constant_(self.heatmap[-1].bias, HEATMAP_BIAS_INIT)

    def forward(self, bev_BCSS: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"det.heatmap": self.heatmap(bev_BCSS), "det.reg": self.reg(bev_BCSS)}


def decode_detections(outputs: dict[str, torch.Tensor], cfg: Config, score_threshold: float = 0.1,
                      max_detections: int | None = None) -> list[dict[str, torch.Tensor]]:
    """Peaks of the class heatmaps (3x3 max-pool, no NMS) -> top-K boxes per sample.

    Args:
        outputs: model outputs with det.heatmap (B, K, S, S) logits and det.reg (B, 10, S, S).
        cfg: config (BEV grid from cfg.preprocess, default K from cfg.model.max_detections).
        score_threshold: minimum sigmoid score kept.
        max_detections: top-K per sample (default cfg.model.max_detections).

    Returns:
        Per sample: boxes (D, 9) [x, y, z, l, w, h, yaw, vx, vy] ego frame (m, rad, m/s), labels (D,) int64 into
        CATEGORIES, scores (D,) in [0, 1], sorted by descending score.
    """
    heat_BKSS = outputs["det.heatmap"].detach().float().sigmoid()
    reg_B10SS = outputs["det.reg"].detach().float()
    B, K, S, _ = heat_BKSS.shape
    res, extent = cfg.preprocess.bev_resolution_m, cfg.preprocess.bev_extent_m
    peaks = heat_BKSS == F.max_pool2d(heat_BKSS, 3, stride=1, padding=1)
    scores_BQ = (heat_BKSS * peaks).flatten(1)  # (B, K * S * S)
    top_k = min(max_detections or cfg.model.max_detections, scores_BQ.shape[1])
    scores_BT, idx_BT = scores_BQ.topk(top_k, dim=1)
    labels_BT, cell_BT = idx_BT // (S * S), idx_BT % (S * S)
    reg_BT10 = reg_B10SS.flatten(2).gather(2, cell_BT.unsqueeze(1).expand(-1, NUM_REG, -1)).transpose(1, 2)
    i_BT, j_BT = (cell_BT // S).float(), (cell_BT % S).float()
    x = -extent + (i_BT + reg_BT10[..., 0]) * res
    y = -extent + (j_BT + reg_BT10[..., 1]) * res
    lwh = reg_BT10[..., 3:6].clamp(max=6.0).exp()  # clamp: an untrained head must not overflow exp
    yaw = torch.atan2(reg_BT10[..., 6], reg_BT10[..., 7])
    boxes_BT9 = torch.cat([torch.stack([x, y, reg_BT10[..., 2]], -1), lwh, yaw.unsqueeze(-1), reg_BT10[..., 8:10]], -1)
    results = []
    for b in range(B):  # per-sample variable-length filtering only; the maths above is batched
        keep = scores_BT[b] >= score_threshold
        results.append({"boxes": boxes_BT9[b][keep], "labels": labels_BT[b][keep], "scores": scores_BT[b][keep]})
    return results
