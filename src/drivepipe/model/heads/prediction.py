"""Multi-modal agent trajectory prediction from BEV features, agent history and category.

Shape legend: B = batch, A = agents, C = BEV channels, H = agent_hidden, K = modes, Th = history steps (the history
has Th + 1 rows, last = now), Tf = future steps, S = bev_size. All positions are ego-frame metres.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from drivepipe.schema import CATEGORIES

HIST_FEATURES = 5  # per history step: dx, dy relative to now (m), sin yaw, cos yaw, valid flag


def sample_bev(bev_BCSS: torch.Tensor, xy_BA2: torch.Tensor, extent_m: float) -> torch.Tensor:
    """Bilinearly sample BEV features at ego-frame positions -> (B, A, C); zero padding outside the grid.

    Cell (i, j) centres are at -E + (i + 0.5) * res (axis -2 = ego x, axis -1 = ego y). Written with gather rather
    than F.grid_sample, whose CUDA backward has no deterministic implementation.
    """
    B, C, S, _ = bev_BCSS.shape
    res = 2 * extent_m / S
    uv_BA2 = (xy_BA2.to(bev_BCSS.dtype) + extent_m) / res - 0.5  # continuous cell coordinates (i, j)
    lo_BA2 = torch.floor(uv_BA2)
    frac_BA2 = uv_BA2 - lo_BA2
    lo_BA2 = lo_BA2.long()
    flat_BCQ = bev_BCSS.flatten(2)
    out_BAC = bev_BCSS.new_zeros(B, xy_BA2.shape[1], C)
    w_i, w_j = (1 - frac_BA2[..., 0], frac_BA2[..., 0]), (1 - frac_BA2[..., 1], frac_BA2[..., 1])
    for di in (0, 1):
        for dj in (0, 1):  # the four neighbouring cell centres
            i, j = lo_BA2[..., 0] + di, lo_BA2[..., 1] + dj
            w_BA = w_i[di] * w_j[dj]
            inside = (i >= 0) & (i < S) & (j >= 0) & (j < S)
            idx_BA = (i.clamp(0, S - 1) * S + j.clamp(0, S - 1))
            vals_BCA = flat_BCQ.gather(2, idx_BA.unsqueeze(1).expand(-1, C, -1))
            out_BAC = out_BAC + vals_BCA.transpose(1, 2) * (w_BA * inside).unsqueeze(-1)
    return out_BAC


class PredictionHead(nn.Module):
    """Per agent: BEV feature at its current position + MLP over its history + category embedding -> K modes.

    Outputs pred.traj (B, A, K, Tf, 2) ego-frame positions (current position + predicted offsets),
    pred.log_sigma (B, A, K, Tf, 2) per-step log scales, pred.mode_logits (B, A, K).
    """

    def __init__(self, bev_channels: int, hidden: int, num_modes: int, history_steps: int, future_steps: int,
                 extent_m: float) -> None:
        super().__init__()
        self.num_modes, self.future_steps, self.extent_m = num_modes, future_steps, extent_m
        self.hist_mlp = nn.Sequential(nn.Linear((history_steps + 1) * HIST_FEATURES, hidden), nn.ReLU(),
                                      nn.Linear(hidden, hidden))
        self.bev_proj = nn.Linear(bev_channels, hidden)
        self.category = nn.Embedding(len(CATEGORIES), hidden)
        self.trunk = nn.Sequential(nn.LayerNorm(hidden), nn.ReLU(), nn.Linear(hidden, 2 * hidden), nn.ReLU(),
                                   nn.Linear(2 * hidden, 2 * hidden), nn.ReLU())
        self.traj_out = nn.Linear(2 * hidden, num_modes * future_steps * 4)  # (dx, dy, log sx, log sy) per step
        self.mode_out = nn.Linear(2 * hidden, num_modes)

    def forward(self, bev_BCSS: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        hist_BAT3 = batch["agent_hist"].to(bev_BCSS.dtype)
        hist_valid_BAT = batch["agent_hist_valid"].to(bev_BCSS.dtype)
        B, A = hist_BAT3.shape[:2]
        now_BA2 = hist_BAT3[:, :, -1, :2]
        rel_BAT2 = (hist_BAT3[..., :2] - now_BA2.unsqueeze(2)) * hist_valid_BAT.unsqueeze(-1)
        yaw_BAT = hist_BAT3[..., 2]
        hist_feats = torch.cat([rel_BAT2, yaw_BAT.sin().unsqueeze(-1), yaw_BAT.cos().unsqueeze(-1),
                                hist_valid_BAT.unsqueeze(-1)], dim=-1)  # (B, A, Th + 1, 5)
        h_BAH = self.hist_mlp(hist_feats.flatten(2))
        h_BAH = h_BAH + self.bev_proj(sample_bev(bev_BCSS, now_BA2, self.extent_m))
        h_BAH = h_BAH + self.category(batch["agent_labels"].clamp(min=0))  # padding (-1) -> any row; masked later
        z = self.trunk(h_BAH)
        out = self.traj_out(z).view(B, A, self.num_modes, self.future_steps, 4)
        return {
            "pred.traj": now_BA2[:, :, None, None, :] + out[..., :2],
            "pred.log_sigma": out[..., 2:],
            "pred.mode_logits": self.mode_out(z),
        }
