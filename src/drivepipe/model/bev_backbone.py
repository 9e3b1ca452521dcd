"""BEV fusion and backbone: concat(camera BEV, lidar BEV) -> conv -> a 2-scale residual encoder-decoder
(S and S/2, merged FPN-style: upsampled coarse map added to the fine one).

Shape legend: B = batch, C = bev_channels, Ci / Cl = camera / lidar BEV channels, S = bev_size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    """3x3 conv-BN-ReLU-conv-BN with an identity skip."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class BEVBackbone(nn.Module):
    """Fuse the enabled branches and refine at S and S/2.

    Args:
        camera_channels: Ci, or 0 when the camera branch is off.
        lidar_channels: Cl, or 0 when the lidar branch is off.
        channels: C (model.bev_channels).
        num_blocks: residual blocks per scale (model.bev_blocks).
    """

    def __init__(self, camera_channels: int, lidar_channels: int, channels: int, num_blocks: int) -> None:
        super().__init__()
        if camera_channels + lidar_channels == 0:
            raise ValueError("BEV backbone needs at least one input branch")
        self.fuse = nn.Sequential(nn.Conv2d(camera_channels + lidar_channels, channels, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.stage1 = nn.Sequential(*[ResBlock(channels) for _ in range(num_blocks)])
        self.down = nn.Sequential(nn.Conv2d(channels, 2 * channels, 3, 2, 1, bias=False),
                                  nn.BatchNorm2d(2 * channels), nn.ReLU(inplace=True))
        self.stage2 = nn.Sequential(*[ResBlock(2 * channels) for _ in range(num_blocks)])
        # A stride-2 transposed conv, not bilinear interpolation: the latter's CUDA backward is non-deterministic.
        self.up = nn.ConvTranspose2d(2 * channels, channels, 2, stride=2, bias=False)
        self.out = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels),
                                 nn.ReLU(inplace=True))
        self.out_channels = channels

    def forward(self, camera_BCiSS: torch.Tensor | None, lidar_BClSS: torch.Tensor | None) -> torch.Tensor:
        """Either input may be None (branch off) -> fused BEV features (B, C, S, S)."""
        x = torch.cat([t for t in (camera_BCiSS, lidar_BClSS) if t is not None], dim=1)
        x1 = self.stage1(self.fuse(x))  # (B, C, S, S)
        x2 = self.stage2(self.down(x1))  # (B, 2C, ceil(S/2), ceil(S/2))
        S = x1.shape[-1]
        return self.out(x1 + self.up(x2)[..., :S, :S])  # crop: an odd S gives 2 * ceil(S / 2) = S + 1
