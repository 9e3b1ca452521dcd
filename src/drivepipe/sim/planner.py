"""Prediction-aware route following: the ego tracks the route centreline at a speed from IDM against the
perceived agents AND their predicted futures, so perception and prediction quality change how the ego drives.

Everything here is in the CURRENT ego frame (rear axle, x forward, y left, metres, seconds).

Corridor rule: a point is "in the ego's corridor" when its lateral offset from the route is below
half the ego width + half the object width + CORRIDOR_MARGIN_M and it lies ahead of the ego (0 < s < horizon).
- A detected object in the corridor is an IDM leader at its along-route distance with its along-route speed.
- An agent whose predicted trajectory (any mode with probability >= MIN_MODE_PROB) is in the corridor ahead of
  the ego's front bumper at a time when the ego could already be there (its reach accelerating at IDM_ACCEL_MPS2
  up to the desired speed, plus the IDM gap s0 + v T) acts as a standing obstacle at that along-route distance
  (conservative: the ego does not bet on the agent leaving again). Agents not ahead of the front bumper now
  (followers, neighbours alongside) are left out: they come from behind or the side, where braking cannot help
  and a standing ego only gets run into; once one is in the corridor ahead it is a detected leader.
Imitation option: when the model predicts a plan (`plan.traj`), it is driven unless its swept ego footprint
overlaps an object now or an agent's most likely prediction at the same future time; then the route follower runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from drivepipe.idm import IdmParams, idm_accel
from drivepipe.sim.controller import resample_path
from drivepipe.utils.geometry import box_corners_2d
from drivepipe.vehicle import EGO_FRONT_M, EGO_REAR_M, EGO_WIDTH_M

CORRIDOR_MARGIN_M = 0.2  # m: passes a kerb-parked car 0.35 m away (the world parks them 0.25 m into the lane)
MIN_MODE_PROB = 0.15
IDM_MIN_GAP_M = 2.0
IDM_HEADWAY_S = 1.5
IDM_ACCEL_MPS2 = 1.5
IDM_DECEL_MPS2 = 3.0
PLAN_LOOKAHEAD_S = 1.0  # target speed = v + a_idm * this; the PI speed loop then reproduces a_idm
HORIZON_M = 60.0
LIGHT_MATCH_M = 3.0  # a route light's entry point this close to the path applies to the ego
LIGHT_COMMITTED_M = 1.0  # a front bumper this far past a light's stop point is in the junction: clear it, don't stop


@dataclass(frozen=True)
class Perception:
    """What the planner may use, all in the current ego frame.

    boxes: (D, 9) x, y, z, l, w, h, yaw, vx, vy; labels: (D,) category index.
    pred_xy: (A, K, Tf, 2) predicted agent positions at pred_dt_s, 2 pred_dt_s, ...; pred_prob: (A, K) mode
    probabilities; pred_width: (A,) m; pred_origin: (A, 2) their current positions.
    pred_dt_s: seconds between prediction steps. plan_xy: optional (Tf, 2) model plan, plan_dt_s between points.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 9)))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pred_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1, 2)))
    pred_prob: np.ndarray = field(default_factory=lambda: np.zeros((0, 1)))
    pred_width: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pred_dt_s: float = 0.5
    plan_xy: np.ndarray | None = None
    plan_dt_s: float = 0.5
    route_lights: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # schema.Annotations.route_lights
    pred_origin: np.ndarray | None = None  # (A, 2) where each predicted agent is now; None: all count as ahead


@dataclass(frozen=True)
class Plan:
    """path: (N, 2) ego-frame path to track; target_speed_mps; lead_gap_m: bumper gap to the IDM leader (inf if
    none); lead_source: "" | "detection" | "prediction"; source: "route" | "imitation"."""

    path: np.ndarray
    target_speed_mps: float
    lead_gap_m: float
    lead_source: str
    source: str


PLANNER_IDM = IdmParams(accel_mps2=IDM_ACCEL_MPS2, decel_mps2=IDM_DECEL_MPS2, min_gap_m=IDM_MIN_GAP_M,
                        headway_s=IDM_HEADWAY_S)  # unclipped: the controller bounds the command
NUPLAN_REACTIVE_IDM = IdmParams(accel_mps2=1.0, decel_mps2=2.0, min_gap_m=1.0, headway_s=1.5)  # nuPlan reactive IDM


def project_many(path: np.ndarray, s: np.ndarray, xy_N2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised controller.project_on_path for N points -> (arc length (N,), signed lateral offset (N,))."""
    xy = np.asarray(xy_N2, dtype=np.float64).reshape(-1, 2)
    if len(xy) == 0:
        return np.zeros(0), np.zeros(0)
    diff = xy[:, None, :] - path[None, :, :]
    i = np.argmin(np.einsum("nmd,nmd->nm", diff, diff), axis=1)
    j = np.minimum(i + 1, len(path) - 1)
    i0 = np.maximum(j - 1, 0)
    t = path[j] - path[i0]
    n = np.linalg.norm(t, axis=1)
    t = t / np.maximum(n, 1e-9)[:, None]
    rel = xy - path[i]
    along = s[i] + np.where(n > 1e-9, np.einsum("nd,nd->n", rel, t), 0.0)
    lat = np.where(n > 1e-9, t[:, 0] * rel[:, 1] - t[:, 1] * rel[:, 0], 0.0)
    return along, lat


def _in_corridor(path: np.ndarray, s: np.ndarray, xy: np.ndarray, half_width_m: Any) -> tuple[np.ndarray, np.ndarray]:
    """(inside the corridor ahead (N,), arc length along the path (N,), inf where not near the path) of N points;
    only points inside the path's bounding box grown by the widest corridor are projected."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    limit = np.broadcast_to(EGO_WIDTH_M / 2 + np.asarray(half_width_m, dtype=np.float64) + CORRIDOR_MARGIN_M,
                            (len(xy),))
    grow = float(limit.max()) if len(xy) else 0.0
    near = np.all((xy >= path.min(0) - grow) & (xy <= path.max(0) + grow), axis=1)
    along, ok = np.full(len(xy), np.inf), np.zeros(len(xy), bool)
    if near.any():
        a, lat = project_many(path, s, xy[near])
        along[near] = a
        ok[near] = (a > 0.0) & (a < min(s[-1] + 1.0, HORIZON_M)) & (np.abs(lat) < limit[near])
    return ok, along


def _detected_leader(path: np.ndarray, s: np.ndarray, per: Perception, speed_mps: float) -> tuple[float, float]:
    """(bumper gap, along-route speed) of the closest detected object in the corridor (vectorised). An object
    whose centre is behind the ego's front bumper while it moves along the route faster than the ego is
    overtaking through the ego's side or rear (a log-replay agent does not yield): not a leader."""
    b = per.boxes
    if len(b) == 0:
        return np.inf, 0.0
    ok, along = _in_corridor(path, s, b[:, :2], b[:, 4] / 2)
    if not ok.any():
        return np.inf, 0.0
    k = np.minimum(np.searchsorted(s, np.where(ok, along, 0.0)), len(path) - 1)
    t = path[np.minimum(k + 1, len(path) - 1)] - path[np.maximum(k - 1, 0)]
    t = t / np.maximum(np.linalg.norm(t, axis=1), 1e-9)[:, None]
    v_along = np.einsum("nd,nd->n", b[:, 7:9], t)
    ok &= (along > EGO_FRONT_M) | (v_along <= speed_mps)
    gaps = np.where(ok, along - EGO_FRONT_M - b[:, 3] / 2, np.inf)
    m = int(np.argmin(gaps))
    return float(gaps[m]), float(max(0.0, v_along[m]))


def ego_reach_m(speed_mps: float, desired_mps: float, t_s: np.ndarray) -> np.ndarray:
    """How far the ego's front bumper can get in t_s: accelerating at IDM_ACCEL_MPS2 from speed_mps up to
    desired_mps, then cruising."""
    v0, v1 = max(speed_mps, 0.0), max(desired_mps, speed_mps, 0.0)
    t_acc = (v1 - v0) / IDM_ACCEL_MPS2
    t = np.asarray(t_s, dtype=np.float64)
    ta = np.minimum(t, t_acc)
    return v0 * ta + 0.5 * IDM_ACCEL_MPS2 * ta ** 2 + v1 * np.maximum(t - t_acc, 0.0)


def _predicted_obstacle(path: np.ndarray, s: np.ndarray, per: Perception, speed_mps: float,
                        desired_mps: float) -> float:
    """Bumper gap to the nearest predicted corridor point the ego could reach while the agent is there (inf if
    none); see the module docstring."""
    A, K, T = per.pred_xy.shape[:3]
    if A == 0:
        return np.inf
    half_w = np.ones(A)
    half_w[: min(A, len(per.pred_width))] = np.asarray(per.pred_width, dtype=np.float64)[:A] / 2
    likely = per.pred_prob >= MIN_MODE_PROB                                  # (A, K)
    if per.pred_origin is not None and len(per.pred_origin) == A:
        along_now, _ = project_many(path, s, per.pred_origin)
        likely = likely & (along_now > EGO_FRONT_M)[:, None]
    hw = np.broadcast_to(half_w[:, None, None], (A, K, T)).reshape(-1)
    ok, along = _in_corridor(path, s, per.pred_xy.reshape(-1, 2), hw)
    gap = along.reshape(A, K, T) - EGO_FRONT_M - hw.reshape(A, K, T)
    t = np.arange(1, T + 1) * per.pred_dt_s
    reach = ego_reach_m(speed_mps, desired_mps, t) + PLANNER_IDM.min_gap_m + speed_mps * PLANNER_IDM.headway_s
    hit = ok.reshape(A, K, T) & likely[:, :, None] & (gap > 0.0) & (gap <= reach[None, None, :])
    return float(gap[hit].min()) if hit.any() else np.inf


def _light_stop(path: np.ndarray, s: np.ndarray, per: Perception, speed_mps: float) -> float:
    """Bumper gap to the stop point of a red light on the route ahead, or of a yellow one the ego can still stop
    for at IDM_DECEL_MPS2 (inf if none). A light whose stop point the front bumper has passed by more than
    LIGHT_COMMITTED_M no longer applies: the ego is in the junction and clears it."""
    L = per.route_lights
    if len(L) == 0 or len(path) < 2:
        return np.inf
    along, lat = project_many(path, s, L[:, :2])
    gap = along - EGO_FRONT_M
    can_stop = gap > speed_mps ** 2 / (2 * IDM_DECEL_MPS2)
    stop = ((L[:, 2] == 2) | ((L[:, 2] == 1) & can_stop)) & (np.abs(lat) < LIGHT_MATCH_M) & (gap > -LIGHT_COMMITTED_M)
    return float(gap[stop].min()) if stop.any() else np.inf


def plan_route(route_ego_R2: np.ndarray, speed_mps: float, desired_mps: float, per: Perception) -> Plan:
    """Route follower: follow the route, IDM speed against detections, predicted corridor entries and the stop
    point of a red light on the route."""
    path, s = resample_path(route_ego_R2, 1.0)
    if len(path) < 2:
        return Plan(np.zeros((0, 2)), 0.0, np.inf, "", "route")
    s = s - project_many(path, s, np.zeros((1, 2)))[0][0]  # arc length from the ego, not from the path's start
    gaps = {"detection": _detected_leader(path, s, per, speed_mps),
            "prediction": (_predicted_obstacle(path, s, per, speed_mps, desired_mps), 0.0),
            "red_light": (_light_stop(path, s, per, speed_mps), 0.0)}
    source = min(gaps, key=lambda k: gaps[k][0])
    gap, lead_v = gaps[source]
    if not np.isfinite(gap):
        source = ""
    accel = float(idm_accel(speed_mps, desired_mps, gap, lead_v, PLANNER_IDM))
    target = float(np.clip(speed_mps + accel * PLAN_LOOKAHEAD_S, 0.0, desired_mps))
    return Plan(path, target, float(gap), source, "route")


def boxes_overlap(a_42: np.ndarray, b_42: np.ndarray) -> bool:
    """Separating-axis test of two convex quadrilaterals (4, 2)."""
    for poly in (a_42, b_42):
        for i in range(4):
            edge = poly[(i + 1) % 4] - poly[i]
            axis = np.array([-edge[1], edge[0]])
            pa, pb = a_42 @ axis, b_42 @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


def _ego_footprint(xy: np.ndarray, yaw: float) -> np.ndarray:
    length, width = EGO_FRONT_M + EGO_REAR_M, EGO_WIDTH_M + 2 * CORRIDOR_MARGIN_M
    centre = xy + (EGO_FRONT_M - EGO_REAR_M) / 2 * np.array([np.cos(yaw), np.sin(yaw)])
    return box_corners_2d(centre[None], np.array([length]), np.array([width]), np.array([yaw]))[0]


def plan_collides(plan_xy: np.ndarray, plan_dt_s: float, per: Perception) -> bool:
    """Does the ego footprint (widened by the corridor margin) along the plan overlap an object where it is now,
    or an agent's most likely predicted position at the same future time?"""
    pts = np.vstack([[0.0, 0.0], plan_xy])
    now = box_corners_2d(per.boxes[:, :2], per.boxes[:, 3], per.boxes[:, 4], per.boxes[:, 6]) \
        if len(per.boxes) else np.zeros((0, 4, 2))
    for i in range(1, len(pts)):
        d = pts[i] - pts[i - 1]
        ego = _ego_footprint(pts[i], float(np.arctan2(d[1], d[0])) if np.hypot(*d) > 1e-3 else 0.0)
        if any(boxes_overlap(ego, box) for box in now):
            return True
        k = int(round(i * plan_dt_s / per.pred_dt_s)) - 1
        if not 0 <= k < per.pred_xy.shape[2]:
            continue
        for a in range(per.pred_xy.shape[0]):
            traj = per.pred_xy[a, int(np.argmax(per.pred_prob[a]))]
            step = traj[k] - (traj[k - 1] if k > 0 else traj[k])
            yaw = float(np.arctan2(step[1], step[0])) if np.hypot(*step) > 1e-3 else 0.0
            w = float(per.pred_width[a]) if a < len(per.pred_width) else 2.0
            box = box_corners_2d(traj[k][None], np.array([max(w * 2.2, 1.0)]), np.array([w]), np.array([yaw]))[0]
            if boxes_overlap(ego, box):
                return True
    return False


def plan(route_ego_R2: np.ndarray, speed_mps: float, desired_mps: float, per: Perception,
         mode: str = "route_follower") -> Plan:
    """The planner entry point: `mode` is carla_eval.planner ("route_follower" | "imitation")."""
    if mode == "imitation" and per.plan_xy is not None and len(per.plan_xy) >= 2:
        if not plan_collides(per.plan_xy, per.plan_dt_s, per):
            steps = np.linalg.norm(np.diff(np.vstack([[0.0, 0.0], per.plan_xy]), axis=0), axis=1)
            target = float(np.clip(steps[0] / per.plan_dt_s, 0.0, desired_mps))
            return Plan(np.vstack([[0.0, 0.0], per.plan_xy]), target, np.inf, "", "imitation")
    return plan_route(route_ego_R2, speed_mps, desired_mps, per)
