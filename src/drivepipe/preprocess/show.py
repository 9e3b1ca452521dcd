"""A picture of one `Sample`: cameras with projected GT boxes, and BEV panels (lidar pillars, map layers,
occupancy, boxes with agent histories / futures). For eyeballing a cache, not for metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from drivepipe.sample import Sample
from drivepipe.utils.geometry import box_corners_2d
from drivepipe.utils.projection import BOX_EDGES, box_corners_3d, project_to_image


def _bev_extent(sample: Sample, resolution_m: float) -> list[float]:
    e = sample["seg"].shape[-1] * resolution_m / 2
    return [e, -e, -e, e]  # imshow extent with x (ego y) leftwards positive -> image left = +y


def _ground_points(sample: Sample, class_index: int, resolution_m: float) -> np.ndarray:
    """Ego-frame ground points (N, 3) at the centres of the BEV cells of one map class (z = 0)."""
    seg = sample["seg"][class_index]
    centres = -seg.shape[-1] * resolution_m / 2 + (np.arange(seg.shape[-1]) + 0.5) * resolution_m
    i, j = np.nonzero(seg)
    return np.stack([centres[i], centres[j], np.zeros(len(i))], axis=1)


def _plot_cameras(axes: list[Any], sample: Sample, header: dict[str, Any]) -> None:
    corners = box_corners_3d(sample["boxes"])
    classes = list(header.get("seg_classes", []))
    res = float(header.get("bev_resolution_m", 0.5))
    lanes = {name: _ground_points(sample, classes.index(name), res)
             for name in ("lane_divider", "crosswalk") if name in classes}
    cameras = header.get("cameras") or [f"camera {k}" for k in range(len(axes))]
    for k, ax in enumerate(axes):
        img = sample["images"][k].transpose(1, 2, 0)
        ax.imshow(img)
        h, w = img.shape[:2]
        for name, colour in (("lane_divider", "yellow"), ("crosswalk", "orange")):
            if name in lanes and len(lanes[name]):  # the BEV lane raster projected onto the ground in the image
                uv, depth = project_to_image(lanes[name], sample["intrinsics"][k], sample["cam_to_ego"][k])
                ok = depth > 0.1
                ax.scatter(uv[ok, 0], uv[ok, 1], s=3, c=colour, alpha=0.6, linewidths=0)
        for box in corners:
            uv, depth = project_to_image(box, sample["intrinsics"][k], sample["cam_to_ego"][k])
            ok = depth > 0.1
            for a, b in BOX_EDGES:
                if ok[a] and ok[b]:
                    ax.plot([uv[a, 0], uv[b, 0]], [uv[a, 1], uv[b, 1]], color="lime", lw=0.8)
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_title(str(cameras[k]), fontsize=7)
        ax.axis("off")


def _bev_image(channel_SS: np.ndarray) -> np.ndarray:
    """(S, S) with axis -2 = ego x -> an image whose up is +x and left is +y."""
    return np.flipud(np.fliplr(np.asarray(channel_SS)))


def _plot_bev(axes: list[Any], sample: Sample, header: dict[str, Any]) -> None:
    res = float(header.get("bev_resolution_m", 0.5))
    ext = _bev_extent(sample, res)
    n = int(header.get("pillar_grid", 1))
    pillars = np.bincount(sample["pillar_index"], minlength=n * n)[: n * n].reshape(n, n)
    axes[0].imshow(_bev_image(np.log1p(pillars)), extent=ext, cmap="magma")
    axes[0].set_title("lidar points per pillar (log)", fontsize=7)
    seg = sample["seg"].astype(float)
    colors = np.array([[0.6, 0.6, 0.6], [0.2, 0.4, 1.0], [1.0, 1.0, 0.2], [1.0, 0.3, 0.3], [0.3, 0.9, 0.3],
                       [0.9, 0.5, 0.1], [0.7, 0.2, 0.9]])
    rgb = np.zeros(seg.shape[1:] + (3,))
    for c in range(seg.shape[0]):
        rgb = np.where(seg[c][..., None] > 0, colors[c % len(colors)], rgb)
    axes[1].imshow(_bev_image(rgb), extent=ext)
    axes[1].set_title("map: " + ", ".join(header.get("seg_classes", [])), fontsize=7)
    occ = sample["occ"].astype(float)
    weights = np.linspace(1.0, 0.3, occ.shape[0])[:, None, None]
    axes[2].imshow(_bev_image((occ * weights).max(axis=0)), extent=ext, cmap="viridis", vmin=0, vmax=1)
    axes[2].set_title(f"occupancy now + {occ.shape[0] - 1} future", fontsize=7)
    _plot_boxes(axes[3], sample, ext)


def _plot_boxes(ax: Any, sample: Sample, ext: list[float]) -> None:
    """Boxes, agent histories (blue), futures (red), ego future (black); x-axis = ego +y to the left."""
    b = sample["boxes"]
    for corners in box_corners_2d(b[:, :2], b[:, 3], b[:, 4], b[:, 6]) if len(b) else []:
        ring = np.vstack([corners, corners[:1]])
        ax.plot(ring[:, 1], ring[:, 0], color="k", lw=0.7)
    for a in range(len(sample["agent_hist"])):
        h, hv = sample["agent_hist"][a], sample["agent_hist_valid"][a]
        f, fv = sample["agent_fut"][a], sample["agent_fut_valid"][a]
        ax.plot(h[hv, 1], h[hv, 0], ".-", color="tab:blue", ms=2, lw=0.7)
        ax.plot(f[fv, 1], f[fv, 0], ".-", color="tab:red", ms=2, lw=0.7)
    ef = sample["ego_fut"][sample["ego_fut_valid"]]
    ax.plot(ef[:, 1], ef[:, 0], "k.-", ms=3)
    r = sample["route"][sample["route_valid"]]
    ax.plot(r[:, 1], r[:, 0], color="tab:green", lw=0.8, alpha=0.6)
    ax.set_xlim(ext[0], ext[1])
    ax.set_ylim(ext[2], ext[3])
    ax.set_aspect("equal")
    ax.set_title("boxes, agent past (blue) / future (red)", fontsize=7)


def render_sample(sample: Sample, header: dict[str, Any], out_png: str | Path, title: str = "") -> Path:
    """Write a PNG with one panel per camera (top rows) and four BEV panels (bottom row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_cam = len(sample["images"])
    cols = max(4, min(n_cam, 4))
    cam_rows = int(np.ceil(n_cam / cols))
    fig, axes = plt.subplots(cam_rows + 1, cols, figsize=(3.2 * cols, 2.2 * cam_rows + 3.4), squeeze=False)
    flat = [ax for row in axes[:cam_rows] for ax in row]
    _plot_cameras(flat[:n_cam], sample, header)
    for ax in flat[n_cam:]:
        ax.axis("off")
    _plot_bev(list(axes[cam_rows][:4]), sample, header)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
