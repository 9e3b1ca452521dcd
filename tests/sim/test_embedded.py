"""EmbeddedBackend on the tiny synthetic dataset: closed-loop steps, step rows, and sensors re-rendered at a
logged pose match the recorded frame."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from drivepipe.config import from_dict
from drivepipe.sim.interfaces import Action
from drivepipe.sim.scorer import STEP_COLUMNS

pytest.importorskip("drivepipe.world.generate")


def _cfg(agents: str = "replay"):
    """The params the session's synthetic_root fixture was generated with (tests/conftest.py)."""
    spec = importlib.util.spec_from_file_location("_root_conftest", Path(__file__).parents[1] / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = from_dict(module.tiny_params())
    return replace(cfg, carla_eval=replace(cfg.carla_eval, duration_s=1.0, agents=[agents]))


@pytest.mark.parametrize("agents", ["replay", "idm"])
def test_embedded_steps_and_rows(synthetic_root: Path, agents: str) -> None:
    from drivepipe.sim.embedded import EmbeddedBackend

    cfg = _cfg(agents)
    backend = EmbeddedBackend(cfg, synthetic_root)
    from drivepipe.nuplan.layout import discover

    log_name = discover(synthetic_root).log_names[0]
    log = backend.prepare(log_name)
    token = str(log.lidar_pcs.token[20])
    sc = backend.make_scenario(f"{log_name}/{token}", seed=1)
    bundle = backend.reset(sc)
    bundle.validate()
    assert set(bundle.cameras) == set(cfg.preprocess.cameras) and len(bundle.lidar.points) > 100
    assert np.allclose(bundle.ego.T_global_from_ego[:2, 3], [sc.start.x, sc.start.y])
    rows = []
    for _ in range(10):
        res = backend.step(Action(steer_rad=0.05, accel_mps2=0.5))
        rows.append(res.info)
        if res.done:
            break
    backend.close()
    assert res.done and len(rows) == 10
    assert set(STEP_COLUMNS) <= set(rows[-1])
    assert rows[-1]["route_progress_m"] > 0 and rows[-1]["speed_mps"] > sc.start.vx
    assert rows[-1]["yaw_rad"] != pytest.approx(sc.start.yaw)  # the action, not the log, moved the ego


def test_step_row_detects_collisions_and_off_road(synthetic_root: Path) -> None:
    from drivepipe.nuplan.layout import discover
    from drivepipe.sim.embedded import EmbeddedBackend
    from drivepipe.world_state import ActorState

    backend = EmbeddedBackend(_cfg(), synthetic_root)
    log_name = discover(synthetic_root).log_names[0]
    log = backend.prepare(log_name)
    backend.reset(backend.make_scenario(f"{log_name}/{log.lidar_pcs.token[20]}", seed=1))
    ego = backend._ego
    ahead = ActorState(77, "pedestrian", ego.x + 3.5 * np.cos(ego.yaw), ego.y + 3.5 * np.sin(ego.yaw), 0.9,
                       0.0, 0.6, 0.6, 1.8)
    far = replace(ahead, track_id=78, category="traffic_cone", x=ego.x + 50.0)
    backend._actors = [ahead, far]
    row = backend._row(0.0)
    assert row["collisions"] == "pedestrian:77"  # the cone 50 m away is not hit
    assert row["off_road"] is False  # the logged start pose is on the road
    backend._ego = replace(ego, x=ego.x + 5000.0)  # far outside the synthetic city
    assert backend._row(0.0)["off_road"] is True
    backend.close()


@pytest.mark.slow
def test_rendered_sensors_at_logged_pose_match_recorded_frame(synthetic_root: Path) -> None:
    from drivepipe.nuplan.bundle import load_bundle
    from drivepipe.nuplan.layout import discover
    from drivepipe.sim.embedded import EmbeddedBackend
    from drivepipe.utils.geometry import quat_to_yaw
    from drivepipe.world_state import EgoKinematics

    cfg = _cfg()
    backend = EmbeddedBackend(cfg, synthetic_root)
    log = backend.prepare(discover(synthetic_root).log_names[0])
    pcs = log.lidar_pcs
    i = next(k for k in range(10, len(pcs)) if log.match_image("CAM_F0", int(pcs.timestamp_us[k])) is not None)
    token = str(pcs.token[i])
    recorded = load_bundle(log, token, ["CAM_F0"], 1, 1, 0.5, 30.0, with_annotations=False)
    ego = EgoKinematics(x=float(pcs.xyz[i, 0]), y=float(pcs.xyz[i, 1]), yaw=quat_to_yaw(pcs.quat[i]),
                        vx=float(pcs.velocity[i, 0]), z=float(pcs.xyz[i, 2]))
    cams, lidar = backend.render(i, ego, backend.actors_at(i), int(pcs.timestamp_us[i]))
    backend.close()
    rendered, stored = cams["CAM_F0"].image.astype(float), recorded.cameras["CAM_F0"].image.astype(float)
    assert rendered.shape == stored.shape
    assert np.abs(rendered - stored).mean() < 3.0  # JPEG round trip only
    ref = recorded.lidar.points
    assert abs(len(lidar) - len(ref)) <= 0.02 * len(ref) + 5
    dist = np.array([np.min(np.linalg.norm(ref[:, :3] - p, axis=1)) for p in lidar[::4, :3]])
    assert np.median(dist) < 0.05 and np.percentile(dist, 95) < 0.2


def test_reactive_vehicle_ahead_of_its_log_stops_at_the_path_end_with_zero_speed() -> None:
    """A reactive (IDM) vehicle that runs out of logged path stands there and says so: the speed it reports is
    the speed it moves at (a stale 10 m/s on a standing car made the privileged planner drive into it)."""
    from types import SimpleNamespace

    from drivepipe.schema import CATEGORY_INDEX
    from drivepipe.sim.reactive import IdmAgents
    from drivepipe.world_state import ActorState, EgoKinematics

    n = 11  # one vehicle, logged 1 m apart over 10 sweeps at 1 m/s (so IDM, aiming at 10 m/s, outruns its log)
    offsets = np.arange(n + 1)
    boxes = SimpleNamespace(rows=lambda i: slice(int(offsets[i]), int(offsets[i + 1])), offsets=offsets,
                            category=np.full(n, CATEGORY_INDEX["vehicle"]), track_id=np.full(n, 7),
                            center=np.stack([np.arange(n, dtype=float), np.zeros(n), np.full(n, 0.8)], 1),
                            velocity=np.tile([1.0, 0.0, 0.0], (n, 1)))
    idm = IdmAgents(SimpleNamespace(boxes=boxes), 0)
    logged = [ActorState(7, "vehicle", 0.0, 0.0, 0.8, 0.0, 4.5, 1.8, 1.6, 1.0, 0.0)]
    far_ego = EgoKinematics(x=-500.0, y=50.0, yaw=0.0)
    prev_x, dt = 0.0, 0.1
    for _ in range(100):
        a = idm.actors(logged, 0.0, far_ego, dt)[0]
        assert a.x <= 10.0 + 1e-9
        assert abs((a.x - prev_x) / dt - a.vx) < 0.3  # reported speed = motion (within one IDM step's change)
        prev_x = a.x
    assert abs(a.vx) < 0.05 and abs(a.vy) < 0.05 and a.x > 8.0  # braked to a stand short of the path end
