"""Lift-Splat-Shoot camera -> BEV: lift each feature pixel into a frustum of depth bins weighted by its depth
distribution, then splat (sum-pool) all frustum points into the BEV grid of `drivepipe.sample`.

Shape legend: B = batch, N = cameras, D = depth bins, h, w = feature cells, C = context channels, S = bev_size,
Q = B * N * D * h * w frustum points, V = valid (in-grid) frustum points.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from drivepipe.config import ModelConfig, PreprocessConfig

# Frustum points outside this ego-frame height band (m) are dropped: below the road or high above any object.
Z_BAND_M = (-2.0, 4.0)


class LiftSplat(nn.Module):
    """Depth logits + context per camera -> camera BEV features (B, C, S, S).

    The frustum (pixel centres x depth-bin centres) is a non-persistent buffer built once from the config. The
    ego-frame geometry and the BEV cell of every frustum point depend only on the calibration, so they are cached
    and recomputed only when `intrinsics` / `cam_to_ego` differ from the previous call (e.g. after a flip).
    `num_geometry_updates` counts recomputations.
    """

    def __init__(self, pre: PreprocessConfig, m: ModelConfig) -> None:
        super().__init__()
        ds = m.feature_downsample
        self.feat_hw = (math.ceil(pre.image_height / ds), math.ceil(pre.image_width / ds))
        self.bev_size = pre.bev_size
        self.resolution_m = pre.bev_resolution_m
        self.extent_m = pre.bev_extent_m
        self.register_buffer("frustum_DhW3", self._make_frustum(pre, m), persistent=False)
        self._cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.num_geometry_updates = 0

    @staticmethod
    def _make_frustum(pre: PreprocessConfig, m: ModelConfig) -> torch.Tensor:
        """(D, h, w, 3) homogeneous pixel coordinates times depth: (u * d, v * d, d) in resized-image pixels."""
        ds = m.feature_downsample
        h, w = math.ceil(pre.image_height / ds), math.ceil(pre.image_width / ds)
        # OpenCV pixel convention (pixel k spans [k - 0.5, k + 0.5]): feature cell j covers pixels j*ds..j*ds+ds-1.
        u_w = torch.arange(w, dtype=torch.float32) * ds + (ds - 1) / 2.0
        v_h = torch.arange(h, dtype=torch.float32) * ds + (ds - 1) / 2.0
        step = (m.depth_max_m - m.depth_min_m) / m.num_depth_bins
        d_D = m.depth_min_m + (torch.arange(m.num_depth_bins, dtype=torch.float32) + 0.5) * step
        d, v, u = torch.meshgrid(d_D, v_h, u_w, indexing="ij")  # each (D, h, w)
        return torch.stack([u * d, v * d, d], dim=-1)

    def frustum_points_ego(self, intrinsics_BN33: torch.Tensor, cam_to_ego_BN44: torch.Tensor) -> torch.Tensor:
        """Ego-frame (x, y, z) of every frustum point, (B, N, D, h, w, 3) metres."""
        K_inv = torch.linalg.inv(intrinsics_BN33.double())  # float64: the inverse of a pinhole is ill-scaled
        R_ego_from_cam = cam_to_ego_BN44[..., :3, :3].double()
        M_BN33 = (R_ego_from_cam @ K_inv).float()  # pixel*depth -> ego-frame offset from the camera
        t_BN3 = cam_to_ego_BN44[..., :3, 3].float()
        pts = torch.einsum("bnij,dhwj->bndhwi", M_BN33, self.frustum_DhW3)
        return pts + t_BN3[:, :, None, None, None, :]

    def _geometry(self, intrinsics_BN33: torch.Tensor, cam_to_ego_BN44: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """(V,) indices of the in-grid frustum points into the flat (Q,) point list, and their (V,) flat (b, cell)."""
        cache = self._cache
        if (cache is not None and cache[0].shape == intrinsics_BN33.shape and cache[1].shape == cam_to_ego_BN44.shape
                and cache[0].device == intrinsics_BN33.device and torch.equal(cache[0], intrinsics_BN33)
                and torch.equal(cache[1], cam_to_ego_BN44)):
            return cache[2], cache[3]
        # Geometry in float32 even under autocast: fp16 would put 40 m points several cm off.
        with torch.no_grad(), torch.autocast(intrinsics_BN33.device.type, enabled=False):
            pts = self.frustum_points_ego(intrinsics_BN33, cam_to_ego_BN44)  # (B, N, D, h, w, 3)
            S = self.bev_size
            ij = torch.floor((pts[..., :2] + self.extent_m) / self.resolution_m).long()  # (B, N, D, h, w, 2)
            valid = ((ij >= 0) & (ij < S)).all(-1) & (pts[..., 2] >= Z_BAND_M[0]) & (pts[..., 2] <= Z_BAND_M[1])
            b_idx = torch.arange(pts.shape[0], device=pts.device).view(-1, 1, 1, 1, 1).expand_as(valid)
            cell = (b_idx * S + ij[..., 0]) * S + ij[..., 1]  # flat (b, i, j)
            point_idx_V = valid.flatten().nonzero().squeeze(1)
            cell_V = cell.flatten()[point_idx_V]
        self._cache = (intrinsics_BN33.detach().clone(), cam_to_ego_BN44.detach().clone(), point_idx_V, cell_V)
        self.num_geometry_updates += 1
        return point_idx_V, cell_V

    def forward(self, depth_logits_BNDhw: torch.Tensor, context_BNChw: torch.Tensor, intrinsics_BN33: torch.Tensor,
                cam_to_ego_BN44: torch.Tensor) -> torch.Tensor:
        """Lift and splat.

        Args:
            depth_logits_BNDhw: (B, N, D, h, w) unnormalised depth-bin scores.
            context_BNChw: (B, N, C, h, w) features to lift.
            intrinsics_BN33: (B, N, 3, 3) pinhole matrices of the resized images.
            cam_to_ego_BN44: (B, N, 4, 4) camera (OpenCV axes) -> ego transforms.

        Returns:
            (B, C, S, S) BEV features; axis -2 = ego x, axis -1 = ego y (sample.py convention).
        """
        B, N, D, h, w = depth_logits_BNDhw.shape
        if (h, w) != self.feat_hw or D != self.frustum_DhW3.shape[0]:
            raise ValueError(f"lift-splat: features (D={D}, h={h}, w={w}) do not match the frustum built from the "
                             f"model and preprocess params (D={self.frustum_DhW3.shape[0]}, h, w={self.feat_hw})")
        C, S = context_BNChw.shape[2], self.bev_size
        point_idx_V, cell_V = self._geometry(intrinsics_BN33, cam_to_ego_BN44)
        depth_Q = depth_logits_BNDhw.softmax(dim=2).flatten()
        ctx_C = context_BNChw.permute(0, 1, 3, 4, 2).reshape(-1, C)  # (B * N * h * w, C)
        # Outer product depth x context for the in-grid points only (a dense (Q, C) product would be mostly
        # wasted memory): point (b, n, d, y, x) takes the context of pixel (b, n, y, x).
        ctx_idx_V = point_idx_V // (D * h * w) * (h * w) + point_idx_V % (h * w)
        feats_VC = depth_Q.index_select(0, point_idx_V).unsqueeze(1) * ctx_C.index_select(0, ctx_idx_V)
        # Sum-pool into flat (b, cell) bins. On CUDA index_add_ uses atomic adds: the summation order (and so the
        # last bits of the result) is non-deterministic unless torch.use_deterministic_algorithms is on.
        bev_flat = feats_VC.new_zeros(B * S * S, C)
        bev_flat.index_add_(0, cell_V, feats_VC)
        return bev_flat.view(B, S, S, C).permute(0, 3, 1, 2).contiguous()
