"""Agent occupancy head: now and at `occupancy_future_steps` future steps.

Shape legend: B = batch, C = BEV channels, To = occupancy future steps, S = bev_size.
"""

from __future__ import annotations

from drivepipe.model.heads.segmentation import DenseHead


class OccupancyHead(DenseHead):
    """BEV features (B, C, S, S) -> occ.logits (B, 1 + To, S, S)."""

    def __init__(self, channels: int, num_future_steps: int) -> None:
        super().__init__(channels, 1 + num_future_steps, "occ.logits")
