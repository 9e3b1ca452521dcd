"""PointPillars lidar encoder: per-point 9-D features -> shared Linear+LayerNorm+ReLU -> max over each pillar ->
dense pseudo-image on the pillar grid -> mapped onto the S x S BEV grid (same square, sample.py) -> convs.

Shape legend: B = batch, P = points (padded), V = valid points, C = pillar channels, n = pillars per side
(round(2E / pillar_size)), S = bev_size.
"""

from __future__ import annotations

import torch
from torch import nn

from drivepipe.config import PreprocessConfig
from drivepipe.sample import pillar_cell_m

NUM_POINT_FEATURES = 9  # x, y, z, intensity, offsets to the pillar point mean (3), offsets to the pillar centre (2)


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class PillarEncoder(nn.Module):
    """Lidar points + pillar indices -> lidar BEV features (B, C, S, S).

    LayerNorm (not BatchNorm) in the point MLP keeps a point's feature independent of what else is in the batch,
    so a single-sweep closed-loop batch behaves like training.
    """

    def __init__(self, pre: PreprocessConfig, channels: int) -> None:
        super().__init__()
        # the grid of `sample.pillar_cell_m` (the cache's pillar_index); config keeps 2E / pillar_size_m whole
        self.grid_n, self.pillar_size_m, self.extent_m = pillar_cell_m(pre.bev_size, pre.bev_resolution_m,
                                                                       pre.pillar_size_m)
        self.bev_size = pre.bev_size
        self.channels = channels
        self.point_net = nn.Sequential(nn.Linear(NUM_POINT_FEATURES, channels), nn.LayerNorm(channels), nn.ReLU())
        # Convs run after resampling: at the default 0.25 m pillars / 0.5 m cells a conv on the pillar grid would cost
        # 4x more than on the BEV grid.
        self.bev_conv = nn.Sequential(_conv_bn_relu(channels, channels), _conv_bn_relu(channels, channels))
        self.register_buffer("bev_cell_of_pillar", self._cell_map(self.grid_n, self.bev_size), persistent=False)
        self.register_buffer("pillar_of_bev_cell", self._cell_map(self.bev_size, self.grid_n), persistent=False)

    def point_features(self, points_BP4: torch.Tensor, pillar_index_BP: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(V, 9) decorated point features and their (V,) flat (b, pillar) index; padding (index -1) dropped."""
        B, P = pillar_index_BP.shape
        nn2 = self.grid_n * self.grid_n
        valid_BP = (pillar_index_BP >= 0) & (pillar_index_BP < nn2)
        b_BP = torch.arange(B, device=points_BP4.device).view(B, 1).expand(B, P)
        flat_V = (b_BP * nn2 + pillar_index_BP)[valid_BP]
        pts_V4 = points_BP4[valid_BP].float()
        # Pillar point means with scatter sums over the (B * n * n) flat pillars.
        sums = pts_V4.new_zeros(B * nn2, 3).index_add_(0, flat_V, pts_V4[:, :3])
        counts = pts_V4.new_zeros(B * nn2).index_add_(0, flat_V, torch.ones_like(flat_V, dtype=pts_V4.dtype))
        mean_V3 = sums[flat_V] / counts[flat_V].unsqueeze(1)
        local = pillar_index_BP[valid_BP]
        ij_V2 = torch.stack([local // self.grid_n, local % self.grid_n], dim=1).to(pts_V4.dtype)
        centre_V2 = -self.extent_m + (ij_V2 + 0.5) * self.pillar_size_m
        # Scale to O(1): positions by the BEV half-extent, offsets by the pillar size.
        feats_V9 = torch.cat([
            pts_V4[:, :3] / self.extent_m, pts_V4[:, 3:4],
            (pts_V4[:, :3] - mean_V3) / self.pillar_size_m,
            (pts_V4[:, :2] - centre_V2) / self.pillar_size_m,
        ], dim=1)
        return feats_V9, flat_V

    def scatter_pillars(self, points_BP4: torch.Tensor, pillar_index_BP: torch.Tensor) -> torch.Tensor:
        """Max over each pillar's point features -> dense pseudo-image (B, C, n, n); empty pillars are 0."""
        B, n = pillar_index_BP.shape[0], self.grid_n
        feats_V9, flat_V = self.point_features(points_BP4, pillar_index_BP)
        point_VC = self.point_net(feats_V9)
        grid = point_VC.new_zeros(B * n * n, self.channels)
        grid = grid.scatter_reduce(0, flat_V.unsqueeze(1).expand_as(point_VC), point_VC, reduce="amax",
                                   include_self=False)
        return grid.view(B, n, n, self.channels).permute(0, 3, 1, 2)

    def to_bev_grid(self, pillars_BCnn: torch.Tensor) -> torch.Tensor:
        """Resample the pillar pseudo-image (B, C, n, n) onto the BEV grid (B, C, S, S).

        Both grids tile the same square. Pillars finer than cells (n >= S): each BEV cell takes the max over the
        pillars whose centres lie in it (features are >= 0 and empty pillars 0, so this continues the per-pillar
        max). Coarser pillars: each cell copies the pillar holding its
        centre. Index ops rather than adaptive pooling / bilinear interpolation because their CUDA backward has no
        deterministic implementation (train.deterministic would raise).
        """
        B, C = pillars_BCnn.shape[:2]
        S, flat = self.bev_size, pillars_BCnn.flatten(2)  # (B, C, n * n)
        if self.grid_n >= S:
            index = self.bev_cell_of_pillar.expand(B, C, -1)
            out = flat.new_zeros(B, C, S * S).scatter_reduce(2, index, flat, reduce="amax", include_self=True)
        else:
            out = flat.index_select(2, self.pillar_of_bev_cell)
        return out.view(B, C, S, S)

    @staticmethod
    def _cell_map(n_from: int, n_to: int) -> torch.Tensor:
        """(n_from^2,) flat index of the n_to-grid cell holding each n_from-grid cell centre (same square)."""
        centre = (torch.arange(n_from, dtype=torch.float64) + 0.5) / n_from  # in units of the square's side
        k = torch.floor(centre * n_to).long().clamp(0, n_to - 1)
        return (k[:, None] * n_to + k[None, :]).flatten()

    def forward(self, points_BP4: torch.Tensor, pillar_index_BP: torch.Tensor) -> torch.Tensor:
        """points (B, P, 4) ego x, y, z (m), intensity in [0, 1]; pillar_index (B, P) int64 (-1 = padding) ->
        (B, C, S, S) lidar BEV features."""
        return self.bev_conv(self.to_bev_grid(self.scatter_pillars(points_BP4, pillar_index_BP)))
