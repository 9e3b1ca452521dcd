"""Optional imitation planning head: pooled BEV + ego state + route -> future ego trajectory.

Shape legend: B = batch, C = BEV channels, H = hidden, R = route points, Tf = future steps, S = bev_size.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

EGO_STATE_DIM = 5  # vx, vy, ax, ay, yaw_rate (sample.py)


class PlanningHead(nn.Module):
    """-> plan.traj (B, Tf, 3): x, y (m), yaw (rad) in the current ego frame."""

    def __init__(self, bev_channels: int, hidden: int, route_points: int, future_steps: int) -> None:
        super().__init__()
        self.future_steps = future_steps
        in_dim = bev_channels + EGO_STATE_DIM + 3 * route_points  # route: x, y, valid per point
        self.mlp = nn.Sequential(nn.Linear(in_dim, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, 2 * hidden),
                                 nn.ReLU(), nn.Linear(2 * hidden, future_steps * 3))

    def forward(self, bev_BCSS: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        pooled_BC = bev_BCSS.mean(dim=(2, 3))
        route_valid_BR = batch["route_valid"].to(pooled_BC.dtype)
        route_BR2 = batch["route"].to(pooled_BC.dtype) * route_valid_BR.unsqueeze(-1)
        x = torch.cat([pooled_BC, batch["ego_state"].to(pooled_BC.dtype), route_BR2.flatten(1), route_valid_BR], 1)
        return {"plan.traj": self.mlp(x).view(-1, self.future_steps, 3)}
