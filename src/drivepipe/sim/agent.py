"""`ModelAgent`: the trained model driving in closed loop.

Each tick: bundle -> `preprocess.pipeline.build_sample` (the function that built the training cache, so there is
no train/serve skew) -> collate -> BEV features -> detection heads -> decoded boxes -> nearest-neighbour tracker
(histories at preprocess.traj_dt_s) -> prediction head on the tracked agents (same BEV features, no second
backbone pass) -> planner (sim/planner.py) -> controller (sim/controller.py) -> Action.

Frames: detections and predictions come out in the current ego frame; the tracker keeps global positions so
histories survive the ego's own motion. The agent reads only the bundle's inputs plus the scenario route.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drivepipe.config import Config
from drivepipe.schema import AGENT_CATEGORIES, CATEGORY_INDEX, SensorBundle
from drivepipe.sim.controller import PathTracker
from drivepipe.sim.interfaces import Action, ClosedLoopScenario
from drivepipe.sim.planner import Perception, plan
from drivepipe.utils.geometry import global_to_ego_xy_yaw, wrap_angle

TRACK_GATE_M = 3.0               # max centre distance for a detection to continue a track
TRACK_MAX_MISSES = 3             # ticks a track survives without a detection
ROUTE_AHEAD_M = 80.0             # route handed to the planner, ahead of the ego
CLOSED_LOOP_HEADS = ("det", "plan")  # heads the agent reads (prediction runs after tracking)
AGENT_LABELS = np.array([CATEGORY_INDEX[c] for c in AGENT_CATEGORIES])


@dataclass
class Track:
    track_id: int
    label: int
    size: np.ndarray                                   # (3,) l, w, h m
    times: list[float] = field(default_factory=list)   # s
    poses: list[tuple[float, float, float]] = field(default_factory=list)  # global x, y, yaw
    misses: int = 0


def _pairs_within(a_N2: np.ndarray, b_M2: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Candidate (i, j) index pairs of points of a and b in the same or a neighbouring grid cell of side
    `radius` (a superset of the pairs closer than radius), by sorted cell keys: no N x M matrix."""
    ca, cb = np.floor(a_N2 / radius).astype(np.int64), np.floor(b_M2 / radius).astype(np.int64)
    K = 1 << 24
    kb = cb[:, 0] * K + cb[:, 1]
    order = np.argsort(kb, kind="stable")
    sk = kb[order]
    out_i, out_j = [], []
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            ka = (ca[:, 0] + dx) * K + (ca[:, 1] + dy)
            lo, hi = np.searchsorted(sk, ka, "left"), np.searchsorted(sk, ka, "right")
            n = hi - lo
            if not n.any():
                continue
            i = np.repeat(np.arange(len(a_N2)), n)
            pos = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n) + np.repeat(lo, n)
            out_i.append(i)
            out_j.append(order[pos])
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_i), np.concatenate(out_j)


class NearestNeighbourTracker:
    """Greedy nearest-neighbour association of detections to tracks in the global frame, same label only."""

    def __init__(self) -> None:
        self.tracks: dict[int, Track] = {}
        self._next_id = 0

    def update(self, t_s: float, boxes_global_D6: np.ndarray, labels_D: np.ndarray) -> np.ndarray:
        """boxes: (D, 6) x, y, yaw, l, w, h global. Returns (D,) track id of each detection. Greedy by distance
        over the candidate pairs of a cell grid (vectorised: ~1000 detections per tick stay cheap)."""
        boxes = np.asarray(boxes_global_D6, dtype=np.float64).reshape(-1, 6)
        labels = np.asarray(labels_D).reshape(-1)
        ids = np.full(len(boxes), -1, np.int64)
        live = list(self.tracks.values())
        if live and len(boxes):
            last = np.array([tr.poses[-1][:2] for tr in live])
            d_idx, t_idx = _pairs_within(boxes[:, :2], last, TRACK_GATE_M)
            tlab = np.array([tr.label for tr in live])
            dist = np.linalg.norm(boxes[d_idx, :2] - last[t_idx], axis=1)
            keep = (labels[d_idx] == tlab[t_idx]) & (dist < TRACK_GATE_M)
            d_idx, t_idx, dist = d_idx[keep], t_idx[keep], dist[keep]
            order = np.lexsort((t_idx, d_idx, dist))
            used_d, used_t = np.zeros(len(boxes), bool), np.zeros(len(live), bool)
            for d, t in zip(d_idx[order].tolist(), t_idx[order].tolist()):
                if not used_d[d] and not used_t[t]:
                    ids[d], used_d[d], used_t[t] = live[t].track_id, True, True
        for d, b in enumerate(boxes):
            if ids[d] < 0:
                ids[d] = self._next_id
                self.tracks[self._next_id] = Track(self._next_id, int(labels[d]), b[3:6].copy())
                self._next_id += 1
            tr = self.tracks[int(ids[d])]
            tr.times.append(t_s)
            tr.poses.append((float(b[0]), float(b[1]), float(b[2])))
            tr.size, tr.misses = b[3:6].copy(), 0
        seen = set(ids.tolist())
        for tid in [t for t in self.tracks if t not in seen]:
            self.tracks[tid].misses += 1
            if self.tracks[tid].misses > TRACK_MAX_MISSES:
                del self.tracks[tid]
        return ids

    def agent_arrays(self, t_s: float, ego_pose: tuple[float, float, float], dt_s: float, steps: int,
                     max_agents: int) -> dict[str, np.ndarray]:
        """Tracked agents seen now as prediction-head inputs: agent_hist (A, steps + 1, 3) ego frame, oldest first,
        agent_hist_valid, agent_labels, agent_box (row in `boxes`, = arange), sizes (A, 3), ids (A,), origin (A, 2)
        (ego-frame position now)."""
        now = [tr for tr in self.tracks.values() if tr.misses == 0 and tr.label in AGENT_LABELS]
        now.sort(key=lambda tr: np.hypot(tr.poses[-1][0] - ego_pose[0], tr.poses[-1][1] - ego_pose[1]))
        now = now[:max_agents]
        hist = np.zeros((len(now), steps + 1, 3), np.float32)
        valid = np.zeros((len(now), steps + 1), bool)
        tq = t_s - (steps - np.arange(steps + 1)) * dt_s
        picked = np.zeros((len(now), steps + 1, 3))
        for a, tr in enumerate(now):
            times, poses = np.asarray(tr.times), np.asarray(tr.poses)
            j = np.argmin(np.abs(times[None, :] - tq[:, None]), axis=1)
            valid[a] = np.abs(times[j] - tq) <= dt_s / 2 + 1e-6
            picked[a] = poses[j]
        if len(now):  # one frame change for every agent and step
            xy, yaw = global_to_ego_xy_yaw(picked[..., :2].reshape(-1, 2), picked[..., 2].reshape(-1), *ego_pose)
            hist[:] = np.concatenate([xy, np.asarray(yaw).reshape(-1, 1)], 1).reshape(hist.shape)
            hist[~valid] = 0.0
        return {"agent_hist": hist, "agent_hist_valid": valid,
                "agent_labels": np.array([tr.label for tr in now], np.int64),
                "agent_box": np.arange(len(now), dtype=np.int64),
                "sizes": np.array([tr.size for tr in now]).reshape(-1, 3), "ids": np.array([tr.track_id for tr in now]),
                "origin": hist[:, -1, :2].astype(np.float64)}


class PlannerAgent:
    """Perception (a subclass's `_perceive`) -> tracker -> planner -> controller, with the route and the route's
    traffic lights from the bundle. Shared by the model agent and the privileged baseline."""

    needs_sensors = True   # the backend renders cameras/lidar for this agent
    privileged = False     # the backend puts ground-truth boxes in the bundle

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.tracker = NearestNeighbourTracker()
        self.controller = PathTracker(method=cfg.carla_eval.controller, dt_s=cfg.carla_eval.step_s)
        self.route_xy = np.zeros((0, 2))
        self._t0_us: int | None = None
        self._cursor = 0

    def reset(self, scenario_meta: ClosedLoopScenario) -> None:
        self.tracker = NearestNeighbourTracker()
        self.controller.reset()
        self.route_xy = np.asarray(scenario_meta.route_xy, dtype=np.float64)
        self._t0_us, self._cursor = None, 0

    def close(self) -> None:
        self.tracker = NearestNeighbourTracker()

    def _route_ahead(self, x: float, y: float, yaw: float) -> np.ndarray:
        """The route from the ego's projection onwards (monotone cursor), in the ego frame."""
        r = self.route_xy
        if len(r) == 0:
            return np.zeros((0, 2))
        hi = min(len(r), self._cursor + 200)
        self._cursor += int(np.argmin(np.linalg.norm(r[self._cursor:hi] - [x, y], axis=1)))
        ahead = r[max(0, self._cursor - 1):]
        seg = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(ahead, axis=0), axis=1))])
        local, _ = global_to_ego_xy_yaw(ahead[seg <= ROUTE_AHEAD_M], np.zeros(int((seg <= ROUTE_AHEAD_M).sum())),
                                        x, y, yaw)
        return local

    def _perceive(self, bundle: SensorBundle, t_s: float, pose: tuple[float, float, float]) -> tuple[dict, dict]:
        raise NotImplementedError

    def act(self, bundle: SensorBundle) -> Action:
        """See base class."""
        T = bundle.ego.T_global_from_ego
        pose = (float(T[0, 3]), float(T[1, 3]), bundle.ego.heading_rad)
        if self._t0_us is None:
            self._t0_us = bundle.meta.timestamp_us
        t_s = (bundle.meta.timestamp_us - self._t0_us) / 1e6
        res, agents = self._perceive(bundle, t_s, pose)
        dt = self.cfg.preprocess.traj_dt_s
        lights = bundle.annotations.route_lights if bundle.annotations is not None else np.zeros((0, 3))
        per = Perception(boxes=res["boxes"], labels=res["labels"], pred_xy=res["pred_xy"],
                         pred_prob=res["pred_prob"], pred_width=agents["sizes"][:, 1] if len(agents["sizes"]) else
                         np.zeros(0), pred_dt_s=dt, plan_xy=res["plan_xy"], plan_dt_s=dt, route_lights=lights,
                         pred_origin=agents["origin"])
        speed = float(bundle.ego.velocity_mps[0])
        p = plan(self._route_ahead(*pose), speed, self.cfg.carla_eval.target_speed_mps, per,
                 self.cfg.carla_eval.planner)
        steer, accel = self.controller.command(p.path, speed, p.target_speed_mps)
        return Action(steer, accel, waypoints=p.path[:20], info=self._record(res, p, pose))

    @staticmethod
    def _record(res: dict[str, Any], p: Any, pose: tuple[float, float, float]) -> dict[str, Any]:
        """Per-step perception and planning outputs in the GLOBAL frame, for the replay."""
        b = res["boxes"]
        xy, yaw = _ego_to_global(b[:, :2], b[:, 6], pose)
        order = np.argsort(-res["pred_prob"], axis=1)[:, :2] if len(res["pred_prob"]) else np.zeros((0, 2), int)
        top = np.take_along_axis(res["pred_xy"], order[:, :, None, None], 1) if len(order) else np.zeros((0, 2, 1, 2))
        pred_g = _ego_to_global(top.reshape(-1, 2), np.zeros(top.reshape(-1, 2).shape[0]), pose)[0].reshape(top.shape)
        return {"detections_global": np.concatenate([xy, yaw[:, None], b[:, 3:5]], 1),
                "detection_labels": res["labels"], "detection_scores": res["scores"], "predictions_global": pred_g,
                "plan_global": _ego_to_global(p.path[:40], np.zeros(len(p.path[:40])), pose)[0],
                "plan_source": p.source, "lead_source": p.lead_source, "lead_gap_m": p.lead_gap_m}


class ModelAgent(PlannerAgent):
    """See the module docstring. `model` is a DrivingModel already holding its weights; `device` a torch device."""

    def __init__(self, cfg: Config, model: Any, device: Any) -> None:
        super().__init__(cfg)
        self.model, self.device = model.eval().to(device), device

    def _perceive(self, bundle: SensorBundle, t_s: float, pose: tuple[float, float, float]) -> tuple[dict, dict]:
        """Model forward on the bundle -> (numpy outputs, tracked agent arrays)."""
        import torch

        from drivepipe.model.heads.detection import decode_detections
        from drivepipe.preprocess.pipeline import build_sample
        from drivepipe.sample import collate, to_device

        pre = self.cfg.preprocess
        sample = build_sample(bundle, pre, with_targets=False)
        with torch.no_grad():
            batch = to_device(collate([sample]), self.device)
            bev, out = self.model.perceive(batch, heads=CLOSED_LOOP_HEADS)  # seg/occupancy: unused here
            det = decode_detections(out, self.cfg, self.cfg.carla_eval.detection_score_threshold)[0]
            boxes = det["boxes"].cpu().numpy().astype(np.float64)
            labels = det["labels"].cpu().numpy()
            xy, yaw = _ego_to_global(boxes[:, :2], boxes[:, 6], pose)
            self.tracker.update(t_s, np.concatenate([xy, yaw[:, None], boxes[:, 3:6]], 1), labels)
            agents = self.tracker.agent_arrays(t_s, pose, pre.traj_dt_s, pre.history_steps, pre.max_agents)
            for key in ("agent_hist", "agent_hist_valid", "agent_labels"):
                arr = agents[key] if len(agents[key]) else np.zeros((1,) + agents[key].shape[1:], agents[key].dtype)
                if key == "agent_labels" and not len(agents[key]):
                    arr = np.full(1, -1, np.int64)
                batch[key] = torch.from_numpy(arr[None]).to(self.device)
            out.update(self.model.predict_agents(bev, batch))
        num_agents = len(agents["ids"])
        res = {"boxes": boxes, "labels": labels, "scores": det["scores"].cpu().numpy(),
               "pred_xy": out["pred.traj"][0, :num_agents].cpu().numpy().astype(np.float64),
               "pred_prob": torch.softmax(out["pred.mode_logits"][0, :num_agents].float(), -1).cpu().numpy(),
               "plan_xy": out["plan.traj"][0, :, :2].cpu().numpy() if "plan.traj" in out else None}
        return res, agents


def _ego_to_global(xy_N2: np.ndarray, yaw_N: np.ndarray, pose: tuple[float, float, float]
                   ) -> tuple[np.ndarray, np.ndarray]:
    x, y, yaw = pose
    c, s = np.cos(yaw), np.sin(yaw)
    xy = np.asarray(xy_N2, dtype=np.float64).reshape(-1, 2)
    out = np.stack([x + c * xy[:, 0] - s * xy[:, 1], y + s * xy[:, 0] + c * xy[:, 1]], 1)
    return out, np.asarray(wrap_angle(np.asarray(yaw_N, dtype=np.float64) + yaw)).reshape(-1)


def load_agent(cfg: Config, checkpoint: str | Path) -> ModelAgent:
    """Build the model, load a checkpoint's weights (strict) and wrap it in a ModelAgent.

    `checkpoint` is a checkpoint directory (holds model.pt or model.safetensors), an experiment directory (its
    carla_eval.checkpoint is used) or the checkpoints root (then `<root>/<train.experiment>/<carla_eval.checkpoint>`).
    """
    import torch

    from drivepipe.model.model import build_model
    from drivepipe.model.weights import load_model_weights, resolve_checkpoint

    path = Path(checkpoint)
    if not any((path / name).is_file() for name in ("model.pt", "model.safetensors")):
        exp = path / cfg.train.experiment if (path / cfg.train.experiment).is_dir() else path
        path = resolve_checkpoint(exp, cfg.carla_eval.checkpoint)
    state, _ = load_model_weights(path)
    model = build_model(cfg)
    model.load_state_dict(state, strict=True)
    want_cuda = cfg.train.device in ("auto", "cuda") and torch.cuda.is_available()
    return ModelAgent(cfg, model, torch.device("cuda" if want_cuda else "cpu"))
