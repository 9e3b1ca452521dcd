"""Top-down replay GIF of one closed-loop episode: route, ego, ground-truth agents, detected boxes, predicted
modes and the plan, in a window that follows the ego (global frame, metres)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from drivepipe.utils.geometry import box_corners_2d
from drivepipe.vehicle import EGO_FRONT_M, EGO_REAR_M, EGO_WIDTH_M

VIEW_HALF_M = 30.0


def _draw_boxes(ax: Any, boxes_N5: np.ndarray, **style: Any) -> None:
    """boxes: (N, 5) x, y, yaw, length, width (global)."""
    if len(boxes_N5) == 0:
        return
    b = np.asarray(boxes_N5, dtype=np.float64)
    for poly in box_corners_2d(b[:, :2], b[:, 3], b[:, 4], b[:, 2]):
        ax.fill(poly[:, 0], poly[:, 1], **style)


def _ego_box(row: dict[str, Any]) -> np.ndarray:
    x, y, yaw = float(row["x_m"]), float(row["y_m"]), float(row["yaw_rad"])
    off = (EGO_FRONT_M - EGO_REAR_M) / 2
    return np.array([[x + off * np.cos(yaw), y + off * np.sin(yaw), yaw, EGO_FRONT_M + EGO_REAR_M, EGO_WIDTH_M]])


def _draw_frame(ax: Any, frame: dict[str, Any], route_xy: np.ndarray, background: list[np.ndarray]) -> None:
    row, agent = frame["row"], frame.get("agent", {})
    cx, cy = float(row["x_m"]), float(row["y_m"])
    ax.clear()
    ax.set_xlim(cx - VIEW_HALF_M, cx + VIEW_HALF_M)
    ax.set_ylim(cy - VIEW_HALF_M, cy + VIEW_HALF_M)
    ax.set_aspect("equal")
    ax.axis("off")
    for ring in background:
        ax.fill(ring[:, 0], ring[:, 1], color="#eeeeee", zorder=0)
    if len(route_xy):
        ax.plot(route_xy[:, 0], route_xy[:, 1], color="#9ecae1", lw=3)
    _draw_boxes(ax, frame.get("actors", np.zeros((0, 5))), color="#7f7f7f", alpha=0.8)
    _draw_boxes(ax, agent.get("detections_global", np.zeros((0, 5))), fill=False, edgecolor="#d62728", lw=1)
    for modes in agent.get("predictions_global", []):
        for traj in modes:
            ax.plot(traj[:, 0], traj[:, 1], color="#ff7f0e", lw=0.8, alpha=0.7)
    path = agent.get("plan_global")
    if path is not None and len(path):
        ax.plot(path[:, 0], path[:, 1], color="#2ca02c", lw=1.2)
    hit = bool(row.get("collisions"))
    _draw_boxes(ax, _ego_box(row), color="#d62728" if hit else "#1f77b4")
    ax.text(cx - VIEW_HALF_M + 1, cy + VIEW_HALF_M - 4, f"t={float(row['t_s']):.1f}s v={float(row['speed_mps']):.1f}",
            fontsize=6)


def write_replay_gif(path: str | Path, frames: list[dict[str, Any]], route_xy: np.ndarray,
                     background: list[np.ndarray] | None = None, size_px: int = 240, every: int = 2,
                     fps: float = 5.0) -> Path:
    """Write an animated GIF of `frames` (dicts with "row" = step row, optional "actors" (M, 5) global boxes and
    "agent" = Action.info with detections_global (D, 5), predictions_global (A, K, Tf, 2), plan_global (N, 2)).

    background: optional (N, 2) global polygons (drivable area) drawn under everything. Every `every`-th frame is
    drawn at `size_px` square. Returns the path.
    """
    import imageio.v2 as imageio
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = plt.figure(figsize=(size_px / 100, size_px / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    images = []
    try:
        for frame in frames[::max(1, every)]:
            _draw_frame(ax, frame, np.asarray(route_xy), background or [])
            fig.canvas.draw()
            images.append(np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy())
    finally:
        plt.close(fig)
    if not images:
        raise ValueError("write_replay_gif: no frames")
    tmp = path.with_suffix(".tmp.gif")
    imageio.mimsave(tmp, images, duration=1000.0 / fps, loop=0)
    tmp.replace(path)
    return path
