"""PNG pictures of a few fixed val samples: BEV (GT vs predicted boxes, lanes, occupancy, predicted modes vs GT
futures) and the cameras with projected predicted boxes. matplotlib with the Agg backend, fixed file names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from drivepipe.utils.geometry import box_corners_2d
from drivepipe.utils.projection import BOX_EDGES, box_corners_3d, project_to_image


def _draw_boxes_bev(ax: Any, boxes: np.ndarray, color: str, extent: float) -> None:
    if len(boxes) == 0:
        return
    for corners in box_corners_2d(boxes[:, :2], boxes[:, 3], boxes[:, 4], boxes[:, 6]):
        closed = np.vstack([corners, corners[:1]])
        ax.plot(-closed[:, 1], closed[:, 0], color=color, lw=1.0)  # plot x = -y_ego (left is left), y = x_ego


def bev_picture(path: Path, item: dict[str, Any], pred: dict[str, Any], seg_classes: list[str], extent: float) -> None:
    """Four panels: GT map layers, predicted lanes, occupancy (GT vs predicted), boxes + trajectories."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img_extent = (extent, -extent, -extent, extent)  # imshow: rows = ego x (flipped up), cols = ego y (flipped)
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    titles = ("GT map layers", "predicted map layers", "occupancy GT (green) / pred (red)",
              "boxes GT (green) / pred (red), futures")
    axes[0].imshow(_rgb_layers(item["seg"]), origin="lower", extent=img_extent)
    axes[1].imshow(_rgb_layers(pred["seg"] >= 0.5), origin="lower", extent=img_extent)
    occ = np.zeros(item["occ"].shape[1:] + (3,))
    occ[..., 1] = item["occ"][0]
    occ[..., 0] = pred["occ"][0] >= 0.5
    axes[2].imshow(occ, origin="lower", extent=img_extent)
    ax = axes[3]
    _draw_boxes_bev(ax, item["boxes"], "green", extent)
    _draw_boxes_bev(ax, pred["boxes"], "red", extent)
    for a in np.flatnonzero(item["agents"]):
        fut, valid = item["agent_fut"][a], item["agent_fut_valid"][a]
        ax.plot(-fut[valid, 1], fut[valid, 0], color="green", lw=1.5)
        best = pred["probs"][a].argmax()
        for k, mode in enumerate(pred["traj"][a]):
            ax.plot(-mode[:, 1], mode[:, 0], color="red", lw=1.5 if k == best else 0.5, alpha=0.9 if k == best else 0.4)
    for a, t in zip(axes, titles, strict=True):
        a.set_title(t, fontsize=9)
        a.set_xlim(-extent, extent)
        a.set_ylim(-extent, extent)
        a.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _rgb_layers(seg_CHW: np.ndarray) -> np.ndarray:
    palette = np.array([[0.35, 0.35, 0.35], [0.2, 0.45, 0.9], [1.0, 1.0, 1.0], [1.0, 0.8, 0.0],
                        [0.6, 0.3, 0.6], [0.9, 0.2, 0.2], [0.3, 0.8, 0.3]])
    rgb = np.zeros(seg_CHW.shape[1:] + (3,))
    for c in range(seg_CHW.shape[0]):
        rgb[seg_CHW[c] > 0] = palette[c % len(palette)]
    return rgb


def camera_picture(path: Path, item: dict[str, Any], boxes: np.ndarray, cameras: list[str]) -> None:
    """The cameras (undistorted, resized) with the predicted boxes projected as wireframes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(cameras)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    corners = box_corners_3d(boxes) if len(boxes) else np.zeros((0, 8, 3))
    for i, name in enumerate(cameras):
        ax = axes[i // cols][i % cols]
        img = item["images"][i].transpose(1, 2, 0)
        ax.imshow(img)
        h, w = img.shape[:2]
        for box in corners:
            uv, depth = project_to_image(box, item["intrinsics"][i], item["cam_to_ego"][i])
            if (depth < 0.5).any() or not ((uv[:, 0] > -w) & (uv[:, 0] < 2 * w)).all():
                continue
            for a, b in BOX_EDGES:
                ax.plot(uv[[a, b], 0], uv[[a, b], 1], color="red", lw=0.8)
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    for j in range(n, rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
