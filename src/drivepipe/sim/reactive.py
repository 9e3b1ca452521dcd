"""Reactive agents for the embedded backend's `idm` mode (nuPlan's reactive closed loop): the vehicles present at
a scenario's start drive along their own logged path with IDM and slow for the ego when it is on that path."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from drivepipe.idm import idm_accel
from drivepipe.schema import CATEGORIES
from drivepipe.sim.planner import NUPLAN_REACTIVE_IDM
from drivepipe.vehicle import EGO_REAR_M
from drivepipe.world_state import ActorState, EgoKinematics

REACTIVE_TARGET_MPS = 10.0  # nuPlan's reactive IDM target speed


class IdmAgents:
    """Reactive vehicles (nuPlan's IDM: target 10 m/s, min gap 1 m, headway 1.5 s, accel 1.0, decel 2.0 m/s^2):
    each vehicle present at the start drives along its own logged path, slowing for the ego when the ego is
    within 2 m of that path ahead of it, and stopping at the path's end when it outruns its log; vehicles that
    appear later and all other objects replay the log."""

    def __init__(self, log: Any, index0: int) -> None:
        b = log.boxes
        rows0 = b.rows(index0)
        self.paths: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.state: dict[int, list[float]] = {}
        for k in range(rows0.start, rows0.stop):
            if CATEGORIES[int(b.category[k])] != "vehicle":
                continue
            tid = int(b.track_id[k])
            sel = np.flatnonzero(b.track_id == tid)
            sel = sel[np.searchsorted(b.offsets, sel, side="right") - 1 >= index0]
            xy = b.center[sel, :2]
            s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
            if len(xy) < 2 or s[-1] < 1.0:
                continue
            self.paths[tid] = (xy, s)
            self.state[tid] = [0.0, float(np.hypot(*b.velocity[k, :2]))]

    def actors(self, logged: list[ActorState], t_s: float, ego: EgoKinematics, dt_s: float) -> list[ActorState]:
        out = []
        for a in logged:
            if a.track_id not in self.paths:
                out.append(a)
                continue
            xy, s = self.paths[a.track_id]
            st = self.state[a.track_id]
            d = np.linalg.norm(xy - [ego.x, ego.y], axis=1)
            k = int(np.argmin(d))
            gap = s[k] - st[0] - a.length / 2 - EGO_REAR_M if d[k] < 2.0 and s[k] > st[0] else np.inf
            end_gap = s[-1] - st[0]  # the logged path ends: stop there (a vehicle ahead of its log waits)
            lead_v = ego.vx if gap <= end_gap else 0.0
            acc = float(idm_accel(st[1], REACTIVE_TARGET_MPS, min(gap, end_gap), lead_v, NUPLAN_REACTIVE_IDM))
            st[1] = max(0.0, st[1] + acc * dt_s)
            st[0] = min(s[-1], st[0] + st[1] * dt_s)
            st[1] = 0.0 if st[0] >= s[-1] else st[1]  # its speed is its motion: never moving while standing
            x, y = np.interp(st[0], s, xy[:, 0]), np.interp(st[0], s, xy[:, 1])
            j = min(int(np.searchsorted(s, st[0])), len(s) - 1)
            h = xy[min(j + 1, len(s) - 1)] - xy[max(j - 1, 0)]
            yaw = float(np.arctan2(h[1], h[0])) if np.hypot(*h) > 1e-3 else a.yaw
            out.append(replace(a, x=float(x), y=float(y), yaw=yaw, vx=st[1] * np.cos(yaw), vy=st[1] * np.sin(yaw)))
        return out
