"""Baseline agents scored on the same scenarios as the model (carla_eval.baselines), and the agent factory.

- stationary: brakes to a stop and stays (a planner that never moves must score low);
- constant_velocity: keeps its start speed and steering straight ahead;
- expert: log replay, the ego is put at the logged pose of each tick (embedded backend only);
- privileged: ground-truth boxes (and constant-velocity futures) into the SAME planner and controller as the
  model, so model vs privileged isolates what perception and prediction cost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from drivepipe.config import Config
from drivepipe.schema import AGENT_CATEGORIES, CATEGORIES, SensorBundle
from drivepipe.sim.agent import PlannerAgent
from drivepipe.sim.interfaces import Action, ClosedLoopScenario

BASELINES = ("stationary", "constant_velocity", "expert", "privileged")
AGENT_LABELS = [CATEGORIES.index(c) for c in AGENT_CATEGORIES]


class _Scripted:
    needs_sensors = False
    privileged = False

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def reset(self, scenario_meta: ClosedLoopScenario) -> None:
        self.scenario = scenario_meta

    def close(self) -> None:
        pass


class StationaryAgent(_Scripted):
    def act(self, bundle: SensorBundle) -> Action:
        return Action(0.0, -1e3)  # the backend clips to its maximum deceleration; speed stops at 0


class ConstantVelocityAgent(_Scripted):
    def act(self, bundle: SensorBundle) -> Action:
        return Action(0.0, 0.0)


class ExpertAgent(_Scripted):
    """Log replay: the logged pose at the next tick (`scenario.extra["expert"]`: x, y, yaw, speed, t columns)."""

    def reset(self, scenario_meta: ClosedLoopScenario) -> None:
        super().reset(scenario_meta)
        if "expert" not in scenario_meta.extra:
            raise ValueError(f"{scenario_meta.scenario_id}: no logged expert (the expert baseline needs a log)")
        self._e = np.asarray(scenario_meta.extra["expert"], dtype=np.float64)
        self._t0: int | None = None

    def act(self, bundle: SensorBundle) -> Action:
        if self._t0 is None:
            self._t0 = bundle.meta.timestamp_us
        t = (bundle.meta.timestamp_us - self._t0) / 1e6 + self.cfg.carla_eval.step_s
        e = self._e
        x, y, v = (float(np.interp(t, e[:, 4], e[:, k])) for k in (0, 1, 3))
        yaw = float(np.interp(t, e[:, 4], np.unwrap(e[:, 2])))
        return Action(pose=(x, y, yaw, v))


class PrivilegedAgent(PlannerAgent):
    """Ground-truth boxes from the bundle (the backend sets them only for this agent) -> tracker -> planner."""

    needs_sensors = False
    privileged = True

    def _perceive(self, bundle: SensorBundle, t_s: float, pose: tuple[float, float, float]) -> tuple[dict, dict]:
        gt = bundle.annotations.boxes
        boxes = np.column_stack([gt.center, gt.size, gt.yaw, gt.velocity]).reshape(-1, 9)
        pre = self.cfg.preprocess
        is_agent = np.isin(gt.category, AGENT_LABELS)
        steps = np.arange(1, pre.future_steps + 1) * pre.traj_dt_s
        a = boxes[is_agent]
        pred = a[:, None, None, :2] + steps[None, None, :, None] * a[:, None, None, 7:9]   # (A, 1, Tf, 2)
        res = {"boxes": boxes, "labels": gt.category, "scores": np.ones(len(boxes)), "pred_xy": pred,
               "pred_prob": np.ones((len(a), 1)), "plan_xy": None}
        return res, {"sizes": a[:, 3:6], "ids": gt.track_id[is_agent], "origin": a[:, :2]}


def make_agent(kind: str, cfg: Config, checkpoint: str | Path | None) -> Any:
    """"model" (needs `checkpoint`) or one of BASELINES."""
    if kind == "model":
        from drivepipe.sim.agent import load_agent

        return load_agent(cfg, checkpoint)
    agents = {"stationary": StationaryAgent, "constant_velocity": ConstantVelocityAgent, "expert": ExpertAgent,
              "privileged": PrivilegedAgent}
    if kind not in agents:
        raise ValueError(f"carla_eval.baselines: unknown agent {kind!r}; expected model or one of {BASELINES}")
    return agents[kind](cfg)
