"""`build_sample`: THE only path from a `SensorBundle` to model arrays (`drivepipe.sample.Sample`).

Used by the cache writer (`preprocess.run`, with targets) and by the closed-loop agent (with_targets=False: the
target fields are present with zero rows / zeros so `sample.collate` still works). Every size comes from
`PreprocessConfig`.
"""

from __future__ import annotations

import numpy as np

from drivepipe.config import PreprocessConfig
from drivepipe.errors import DataError
from drivepipe.preprocess.bev import rasterize_map, rasterize_occupancy
from drivepipe.preprocess.image import undistort_resize
from drivepipe.preprocess.lidar import process_lidar
from drivepipe.sample import ROUTE_POINTS, ROUTE_SPACING_M, Sample, validate_sample
from drivepipe.schema import AgentTracks, Annotations, Boxes, SensorBundle
from drivepipe.utils import detmath


def build_sample(bundle: SensorBundle, cfg: PreprocessConfig, with_targets: bool = True) -> Sample:
    """Convert one bundle into the arrays documented in `drivepipe.sample`.

    Raises:
        DataError: a configured camera is missing, or targets were requested from a bundle without annotations.
    """
    where = f"{bundle.meta.log_name}/{bundle.meta.token}"
    if with_targets and bundle.annotations is None:
        raise DataError(where, "with_targets=True but the bundle has no annotations")
    sample: Sample = {}
    sample.update(_camera_arrays(bundle, cfg, where))
    sample["points"], sample["pillar_index"] = process_lidar(bundle.lidar.points, cfg)
    sample.update(_ego_arrays(bundle, cfg))
    ann = bundle.annotations
    route = ann.route if ann is not None else np.zeros((0, 2))
    sample["route"], sample["route_valid"] = resample_route(route)
    if with_targets:
        sample.update(_target_arrays(ann, cfg))
    else:
        sample.update(_empty_targets(cfg))
    validate_sample(sample)
    return sample


def _camera_arrays(bundle: SensorBundle, cfg: PreprocessConfig, where: str) -> Sample:
    """images (N, 3, H, W) uint8, intrinsics (N, 3, 3) float32, cam_to_ego (N, 4, 4) float32, cfg.cameras order."""
    images, intrinsics, extrinsics = [], [], []
    for channel in cfg.cameras:
        frame = bundle.cameras.get(channel)
        if frame is None:
            raise DataError(where, f"camera {channel} missing")
        img, K = undistort_resize(frame.image, frame.calibration, cfg.image_width, cfg.image_height, frame.downscale)
        images.append(img)
        intrinsics.append(K)
        extrinsics.append(np.asarray(frame.calibration.T_ego_from_cam, dtype=np.float32))
    return {"images": np.stack(images), "intrinsics": np.stack(intrinsics), "cam_to_ego": np.stack(extrinsics)}


def fit_steps(traj_T3: np.ndarray, valid_T: np.ndarray, steps: int, keep_last: bool) -> tuple[np.ndarray, np.ndarray]:
    """Crop or pad a trajectory along axis -2 to `steps` rows (float32) with its validity (bool).

    keep_last=True keeps the newest rows (histories, padding at the start); False keeps the first rows (futures).
    Works for (T, 3) and (A, T, 3).
    """
    traj = np.asarray(traj_T3, dtype=np.float32)
    valid = np.asarray(valid_T, dtype=bool)
    have = traj.shape[-2]
    lead = traj.shape[:-2]
    out = np.zeros(lead + (steps, 3), np.float32)
    ok = np.zeros(lead + (steps,), bool)
    n = min(have, steps)
    if n:
        if keep_last:
            out[..., steps - n:, :], ok[..., steps - n:] = traj[..., have - n:, :], valid[..., have - n:]
        else:
            out[..., :n, :], ok[..., :n] = traj[..., :n, :], valid[..., :n]
    return out, ok


def _ego_arrays(bundle: SensorBundle, cfg: PreprocessConfig) -> Sample:
    """ego_state (5,) vx, vy, ax, ay, yaw_rate; ego_hist (Th+1, 3) + valid (inputs, always present)."""
    ego = bundle.ego
    state = np.array([ego.velocity_mps[0], ego.velocity_mps[1], ego.acceleration_mps2[0], ego.acceleration_mps2[1],
                      ego.angular_rate_rps[2]], dtype=np.float32)
    hist, hist_valid = fit_steps(ego.history, ego.history_valid, cfg.history_steps + 1, keep_last=True)
    return {"ego_state": state, "ego_hist": hist, "ego_hist_valid": hist_valid}


def resample_route(route_R2: np.ndarray, points: int = ROUTE_POINTS, spacing_m: float = ROUTE_SPACING_M
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Resample a route polyline (R, 2) (ego frame, m) to `points` points every `spacing_m` metres, starting at the
    projection of the ego (origin) onto the polyline. Points beyond the end repeat the last point and are invalid.

    Returns route (points, 2) float32 and route_valid (points,) bool.
    """
    out = np.zeros((points, 2), np.float32)
    valid = np.zeros(points, bool)
    r = np.asarray(route_R2, dtype=np.float64).reshape(-1, 2)
    if len(r) == 0:
        return out, valid
    if len(r) == 1:
        out[:] = r[0]
        valid[0] = True
        return out, valid
    seg = np.diff(r, axis=0)
    seg_len = detmath.norm_rows(seg)
    cum = np.concatenate([[0.0], np.cumsum(seg_len)])
    # projection of the origin onto every segment; take the closest
    t = np.clip(-detmath.dot(r[:-1], seg) / np.maximum(seg_len**2, 1e-12), 0.0, 1.0)
    proj = r[:-1] + t[:, None] * seg
    k = int(np.argmin(detmath.norm_rows(proj)))
    s0 = cum[k] + t[k] * seg_len[k]
    s = s0 + spacing_m * np.arange(points)
    valid[:] = s <= cum[-1] + 1e-9
    s = np.minimum(s, cum[-1])
    out[:, 0] = np.interp(s, cum, r[:, 0])
    out[:, 1] = np.interp(s, cum, r[:, 1])
    return out, valid


def _inside(xy_N2: np.ndarray, extent_m: float) -> np.ndarray:
    xy = np.asarray(xy_N2).reshape(-1, 2)
    return (xy[:, 0] >= -extent_m) & (xy[:, 0] < extent_m) & (xy[:, 1] >= -extent_m) & (xy[:, 1] < extent_m)


def _target_arrays(ann: Annotations, cfg: PreprocessConfig) -> Sample:
    """Boxes, agents, seg, occ and the ego future from the ground truth."""
    out: Sample = {}
    b: Boxes = ann.boxes
    keep = np.flatnonzero(_inside(b.center[:, :2], cfg.bev_extent_m))
    boxes = np.concatenate([b.center, b.size, np.asarray(b.yaw).reshape(-1, 1), b.velocity], axis=1)
    out["boxes"] = boxes[keep].astype(np.float32).reshape(-1, 9)
    out["box_labels"] = np.asarray(b.category, np.int64)[keep]
    out["box_track"] = np.asarray(b.track_id, np.int64)[keep]
    out.update(_agent_arrays(ann.agents, b, keep, cfg))
    out["seg"] = rasterize_map(ann.map_layers, list(cfg.seg_classes), cfg.bev_size, cfg.bev_resolution_m)
    out["occ"] = _occupancy(ann.agents, b, cfg)
    out["ego_fut"], out["ego_fut_valid"] = fit_steps(ann.ego_future, ann.ego_future_valid, cfg.future_steps,
                                                     keep_last=False)
    return out


def _agent_arrays(agents: AgentTracks, b: Boxes, kept_boxes: np.ndarray, cfg: PreprocessConfig) -> Sample:
    """The nearest `max_agents` agents whose box was kept, re-indexed into the kept boxes."""
    row_of = np.full(len(b), -1, np.int64)
    row_of[kept_boxes] = np.arange(len(kept_boxes))
    box_index = np.asarray(agents.box_index, np.int64)
    cand = np.flatnonzero(row_of[box_index] >= 0) if len(box_index) else np.zeros(0, np.int64)
    dist = detmath.norm_rows(np.asarray(b.center)[box_index[cand], :2]) if len(cand) else np.zeros(0)
    sel = cand[np.argsort(dist, kind="stable")][: cfg.max_agents]
    hist, hist_valid = fit_steps(agents.history[sel], agents.history_valid[sel], cfg.history_steps + 1, True)
    fut, fut_valid = fit_steps(agents.future[sel], agents.future_valid[sel], cfg.future_steps, False)
    return {"agent_box": row_of[box_index[sel]], "agent_labels": np.asarray(b.category, np.int64)[box_index[sel]],
            "agent_hist": hist.reshape(-1, cfg.history_steps + 1, 3),
            "agent_hist_valid": hist_valid.reshape(-1, cfg.history_steps + 1),
            "agent_fut": fut.reshape(-1, cfg.future_steps, 3),
            "agent_fut_valid": fut_valid.reshape(-1, cfg.future_steps)}


def _occupancy(agents: AgentTracks, b: Boxes, cfg: PreprocessConfig) -> np.ndarray:
    """(1 + occupancy_future_steps, S, S) uint8 from every agent's box footprint (not only the kept ones)."""
    idx = np.asarray(agents.box_index, np.int64)
    now = np.concatenate([np.asarray(b.center)[idx, :2], np.asarray(b.yaw)[idx].reshape(-1, 1)], axis=1)
    size = np.asarray(b.size)[idx, :2]
    fut = np.asarray(agents.future).reshape(len(idx), -1, 3)
    fut_valid = np.asarray(agents.future_valid, bool).reshape(len(idx), -1)
    return rasterize_occupancy(now, size, fut, fut_valid, cfg.occupancy_future_steps, cfg.bev_size,
                               cfg.bev_resolution_m)


def _empty_targets(cfg: PreprocessConfig) -> Sample:
    """Target fields with zero rows (boxes, agents) or zeros (rasters, ego future) for inference-time samples."""
    s, th, tf = cfg.bev_size, cfg.history_steps + 1, cfg.future_steps
    return {
        "boxes": np.zeros((0, 9), np.float32), "box_labels": np.zeros(0, np.int64),
        "box_track": np.zeros(0, np.int64), "agent_box": np.zeros(0, np.int64),
        "agent_labels": np.zeros(0, np.int64), "agent_hist": np.zeros((0, th, 3), np.float32),
        "agent_hist_valid": np.zeros((0, th), bool), "agent_fut": np.zeros((0, tf, 3), np.float32),
        "agent_fut_valid": np.zeros((0, tf), bool),
        "seg": np.zeros((len(cfg.seg_classes), s, s), np.uint8),
        "occ": np.zeros((1 + cfg.occupancy_future_steps, s, s), np.uint8),
        "ego_fut": np.zeros((tf, 3), np.float32), "ego_fut_valid": np.zeros(tf, bool),
    }
