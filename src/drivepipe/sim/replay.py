"""Top-down replay GIF of one closed-loop episode: route, ego, ground-truth agents, detected boxes, predicted
modes and the plan, in a window that follows the ego (global frame, metres; north up).

Drawn straight into a pixel array with OpenCV (sub-pixel fixed-point polygons and lines): a matplotlib figure per
frame cost about a third of the whole closed-loop stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from drivepipe.utils.geometry import box_corners_2d
from drivepipe.vehicle import EGO_FRONT_M, EGO_REAR_M, EGO_WIDTH_M

VIEW_HALF_M = 30.0
_SHIFT = 4  # cv2 fixed-point bits: coordinates are drawn at 1/16 px
# RGB
_PAPER, _DRIVABLE, _ROUTE = (255, 255, 255), (238, 238, 238), (158, 202, 225)
_ACTOR, _DETECTION, _PREDICTION, _PLAN = (127, 127, 127), (214, 39, 40), (255, 127, 14), (44, 160, 44)
_EGO, _EGO_HIT, _TEXT = (31, 119, 180), (214, 39, 40), (0, 0, 0)


class _View:
    """Global metres -> pixel (column, row) of a `size_px` square window centred on (cx, cy)."""

    def __init__(self, cx: float, cy: float, size_px: int) -> None:
        self.cx, self.cy, self.size = cx, cy, size_px
        self.scale = size_px / (2.0 * VIEW_HALF_M)

    def px(self, xy: np.ndarray) -> np.ndarray:
        """(..., 2) global m -> (..., 2) int32 fixed-point pixels (cv2 `shift`)."""
        xy = np.asarray(xy, dtype=np.float64)
        col = (xy[..., 0] - (self.cx - VIEW_HALF_M)) * self.scale
        row = ((self.cy + VIEW_HALF_M) - xy[..., 1]) * self.scale
        return np.round(np.stack([col, row], axis=-1) * (1 << _SHIFT)).astype(np.int32)


def _boxes(boxes_N5: np.ndarray) -> np.ndarray:
    """(N, 5) x, y, yaw, length, width (global) -> (N, 4, 2) corners."""
    b = np.asarray(boxes_N5, dtype=np.float64).reshape(-1, 5)
    return box_corners_2d(b[:, :2], b[:, 3], b[:, 4], b[:, 2]) if len(b) else np.zeros((0, 4, 2))


def _ego_box(row: dict[str, Any]) -> np.ndarray:
    x, y, yaw = float(row["x_m"]), float(row["y_m"]), float(row["yaw_rad"])
    off = (EGO_FRONT_M - EGO_REAR_M) / 2
    return np.array([[x + off * np.cos(yaw), y + off * np.sin(yaw), yaw, EGO_FRONT_M + EGO_REAR_M, EGO_WIDTH_M]])


def draw_frame(frame: dict[str, Any], route_xy: np.ndarray, background: list[np.ndarray],
               size_px: int = 240) -> np.ndarray:
    """One replay frame -> (size_px, size_px, 3) uint8 RGB."""
    import cv2

    row, agent = frame["row"], frame.get("agent", {})
    view = _View(float(row["x_m"]), float(row["y_m"]), size_px)
    img = np.full((size_px, size_px, 3), _PAPER, np.uint8)
    aa = cv2.LINE_AA

    def lines(polylines: list[np.ndarray], colour: tuple[int, int, int], width: int = 1, closed: bool = False) -> None:
        polylines = [view.px(p) for p in polylines if len(p) >= 2]
        if polylines:
            cv2.polylines(img, polylines, closed, colour, width, aa, _SHIFT)

    def fill(polygons: np.ndarray | list[np.ndarray], colour: tuple[int, int, int]) -> None:
        # (N, V, 2) arrays of boxes converted in one call; one fillPoly each: cv2 fills one call's contours even-odd
        for poly in (view.px(polygons) if isinstance(polygons, np.ndarray) else map(view.px, polygons)):
            cv2.fillPoly(img, [poly], colour, aa, _SHIFT)

    fill(background, _DRIVABLE)
    lines([np.asarray(route_xy)], _ROUTE, 3)
    fill(_boxes(frame.get("actors", np.zeros((0, 5)))), _ACTOR)
    detections = view.px(_boxes(agent.get("detections_global", np.zeros((0, 5)))))
    if len(detections):
        cv2.polylines(img, list(detections), True, _DETECTION, 1, aa, _SHIFT)
    lines([traj for modes in agent.get("predictions_global", []) for traj in modes], _PREDICTION)
    plan = agent.get("plan_global")
    if plan is not None and len(plan):
        lines([np.asarray(plan)], _PLAN)
    fill(_boxes(_ego_box(row)), _EGO_HIT if row.get("collisions") else _EGO)
    cv2.putText(img, f"t={float(row['t_s']):.1f}s v={float(row['speed_mps']):.1f}", (4, 12),
                cv2.FONT_HERSHEY_SIMPLEX, 0.35, _TEXT, 1, aa)
    return img


def write_replay_gif(path: str | Path, frames: list[dict[str, Any]], route_xy: np.ndarray,
                     background: list[np.ndarray] | None = None, size_px: int = 240, every: int = 2,
                     fps: float = 5.0) -> Path:
    """Write an animated GIF of `frames` (dicts with "row" = step row, optional "actors" (M, 5) global boxes and
    "agent" = Action.info with detections_global (D, 5), predictions_global (A, K, Tf, 2), plan_global (N, 2)).

    background: optional (N, 2) global polygons (drivable area) drawn under everything. Every `every`-th frame is
    drawn at `size_px` square and reduced to 256 colours (fast octree, no dithering). Returns the path.
    """
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    route = np.asarray(route_xy, dtype=np.float64).reshape(-1, 2)
    images = [Image.fromarray(draw_frame(f, route, background or [], size_px)).quantize(
        256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE) for f in frames[::max(1, every)]]
    if not images:
        raise ValueError("write_replay_gif: no frames")
    tmp = path.with_suffix(".tmp.gif")
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=round(1000.0 / fps), loop=0)
    tmp.replace(path)
    return path
