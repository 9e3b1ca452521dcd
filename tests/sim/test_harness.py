"""Harness: failure isolation, failure budget, unavailable backend recording, reports and the replay GIF."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from drivepipe.config import Config
from drivepipe.errors import BackendUnavailable
from drivepipe.sim.controller import propagate_bicycle
from drivepipe.sim.harness import FailureBudgetExceeded, run_closed_loop, run_scenarios, scenario_seed
from drivepipe.sim.interfaces import Action, ClosedLoopScenario, RouteProgress, StepResult
from drivepipe.sim.replay import write_replay_gif
from drivepipe.world_state import EgoKinematics


class LineBackend:
    """Straight 100 m route; the ego follows the bicycle model; scenario ids containing 'crash' raise."""

    name = "fake"

    def __init__(self) -> None:
        self.closed = 0

    def reset(self, scenario: ClosedLoopScenario):
        if "crash" in scenario.scenario_id:
            raise ZeroDivisionError("scripted crash")
        self.ego, self.t, self.route = scenario.start, 0.0, RouteProgress(scenario.route_xy)
        return "bundle"

    def step(self, action: Action) -> StepResult:
        self.ego = propagate_bicycle(self.ego, action.steer_rad, action.accel_mps2, 0.1)
        self.t += 0.1
        prog, dev = self.route.update(self.ego.x, self.ego.y)
        row = {"t_s": self.t, "x_m": self.ego.x, "y_m": self.ego.y, "yaw_rad": self.ego.yaw,
               "speed_mps": self.ego.vx, "accel_mps2": action.accel_mps2, "yaw_rate_rps": self.ego.yaw_rate,
               "steer_rad": action.steer_rad, "collisions": "", "off_road": False, "route_progress_m": prog,
               "route_length_m": self.route.length_m, "route_deviation_m": dev, "red_light": False,
               "expert_progress_m": None, "done_reason": "",
               "_actors": np.array([[self.ego.x + 20, 3.5, 0.0, 4.5, 2.0]])}
        return StepResult("bundle", False, row)

    def close(self) -> None:
        self.closed += 1


class CruiseAgent:
    def reset(self, scenario_meta) -> None:
        pass

    def act(self, bundle) -> Action:
        return Action(0.0, 0.5, info={"detections_global": np.zeros((0, 5))})

    def close(self) -> None:
        pass


def _sc(sid: str) -> ClosedLoopScenario:
    route = np.stack([np.linspace(0, 100, 101), np.zeros(101)], 1)
    return ClosedLoopScenario(sid, "log", "tok", 0, "loc", route, EgoKinematics(0.0, 0.0, 0.0, vx=5.0), 2.0,
                              scenario_seed(0, sid))


def _cfg(max_failure_rate: float = 0.5, animation: bool = False) -> Config:
    cfg = Config()
    return replace(cfg, carla_eval=replace(cfg.carla_eval, max_failure_rate=max_failure_rate, animation=animation))


def test_crashing_scenario_is_isolated(tmp_path: Path) -> None:
    backend = LineBackend()
    m = run_scenarios(_cfg(0.5, animation=True), backend, CruiseAgent(), [_sc("a/1"), _sc("crash/2")], tmp_path)
    assert m["scenarios"] == 2 and m["failed"] == 1 and m["completed"] == 1
    assert backend.closed == 2  # closed after the good and the failed scenario
    assert 0 < m["route_completion"] < 100 and m["collisions"] == {"vehicle": 0, "pedestrian": 0, "static": 0}
    csv_text = (tmp_path / "details" / "scenarios.csv").read_text()
    assert "crash/2,,loc,failed,ZeroDivisionError,scripted crash" in csv_text
    steps = (tmp_path / "details" / "steps" / "a__1.csv").read_text().splitlines()
    assert steps[0].startswith("t_s,x_m") and len(steps) == 21
    gif = tmp_path / "details" / "replay" / "a__1.gif"
    assert gif.stat().st_size > 1000 and gif.read_bytes()[:3] == b"GIF"
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["driving_score"] == pytest.approx(m["driving_score"]) and saved["backend"] == "fake"


def test_failure_budget_enforced_after_reports(tmp_path: Path) -> None:
    with pytest.raises(FailureBudgetExceeded, match="2/3"):
        run_scenarios(_cfg(0.5), LineBackend(), CruiseAgent(), [_sc("a"), _sc("crash1"), _sc("crash2")], tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text())["failed"] == 2


def test_seeds_are_stable_and_distinct() -> None:
    assert scenario_seed(0, "x") == scenario_seed(0, "x") != scenario_seed(1, "x") != scenario_seed(0, "y")


def test_unavailable_carla_record_and_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import drivepipe.sim.carla_backend as cb

    def no_server(self) -> None:
        raise BackendUnavailable("no CARLA server answered at 127.0.0.1:1 within 2s")

    monkeypatch.setattr(cb.CarlaBackend, "probe", no_server)
    cfg = _cfg()
    cfg = replace(cfg, carla_eval=replace(cfg.carla_eval, backend="carla"))
    m = run_closed_loop(cfg, tmp_path / "ckpt", tmp_path / "data", tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["status"] == "backend_unavailable" and saved["backend"] == "carla"
    assert saved["driving_score"] is None and saved["route_completion"] is None and m["comfort"] is None
    failing = replace(cfg, carla_eval=replace(cfg.carla_eval, on_unavailable="fail"))
    with pytest.raises(BackendUnavailable):
        run_closed_loop(failing, tmp_path / "ckpt", tmp_path / "data", tmp_path / "out2")


def test_replay_gif_small(tmp_path: Path) -> None:
    frames = [{"row": {"t_s": 0.1 * k, "x_m": k, "y_m": 0.0, "yaw_rad": 0.0, "speed_mps": 5.0, "collisions": ""},
               "actors": np.array([[k + 10.0, 0.0, 0.0, 4.5, 2.0]]),
               "agent": {"detections_global": np.array([[k + 10.2, 0.1, 0.0, 4.4, 2.0]]),
                         "predictions_global": np.zeros((1, 2, 6, 2)) + [k + 10, 0],
                         "plan_global": np.stack([np.arange(5.0) + k, np.zeros(5)], 1)}} for k in range(10)]
    path = write_replay_gif(tmp_path / "r.gif", frames, np.stack([np.arange(50.0), np.zeros(50)], 1))
    import imageio.v2 as imageio

    imgs = imageio.mimread(path)
    assert len(imgs) == 5 and imgs[0].shape[:2] == (240, 240)


def test_replay_frame_puts_things_where_they_are() -> None:
    from drivepipe.sim.replay import VIEW_HALF_M, draw_frame

    # ego at (100, 50) heading east; a parked car 10 m north of it; the route runs east along y = 50
    frame = {"row": {"t_s": 1.0, "x_m": 100.0, "y_m": 50.0, "yaw_rad": 0.0, "speed_mps": 5.0, "collisions": ""},
             "actors": np.array([[100.0, 60.0, 0.0, 4.0, 2.0]]), "agent": {}}
    route = np.stack([np.arange(60.0, 140.0), np.full(80, 50.0)], 1)
    img = draw_frame(frame, route, [], size_px=240).astype(int)
    scale = 240 / (2 * VIEW_HALF_M)                          # 4 px per m, north up, centred on the ego

    def pixel(x: float, y: float) -> np.ndarray:
        return img[int(round((50.0 + VIEW_HALF_M - y) * scale)), int(round((x - 100.0 + VIEW_HALF_M) * scale))]

    assert tuple(pixel(100.5, 60.0)) == (127, 127, 127)     # the car, 10 m north = 40 px above the centre
    assert tuple(pixel(100.5, 40.0)) == (255, 255, 255)     # nothing 10 m south
    assert tuple(pixel(100.0 + 1.4, 50.0)) == (31, 119, 180)  # the ego box (rear axle + 1.4 m = its middle)
    assert tuple(pixel(125.0, 50.0)) == (158, 202, 225)     # the route 25 m ahead
    hit = dict(frame, row=dict(frame["row"], collisions="vehicle"))
    assert tuple(draw_frame(hit, route, [], 240)[120, 126]) == (214, 39, 40)  # a colliding ego is red
