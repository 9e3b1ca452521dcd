"""BEV map segmentation and occupancy heads.

Shape legend: B = batch, C = BEV channels, Cs = seg classes, To = occupancy future steps, S = bev_size.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class DenseHead(nn.Module):
    """conv3x3-BN-ReLU-conv1x1 from BEV features to `out_channels` logits under the output key `key`."""

    def __init__(self, channels: int, out_channels: int, key: str) -> None:
        super().__init__()
        self.key = key
        self.net = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels),
                                 nn.ReLU(inplace=True), nn.Conv2d(channels, out_channels, 1))

    def forward(self, bev_BCSS: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {self.key: self.net(bev_BCSS)}


class SegmentationHead(DenseHead):
    """BEV features (B, C, S, S) -> seg.logits (B, Cs, S, S), one binary map class per channel."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__(channels, num_classes, "seg.logits")
