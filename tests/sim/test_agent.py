"""ModelAgent: the tracker, and one embedded closed-loop run end to end with an (untrained) tiny model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from drivepipe.config import from_dict
from drivepipe.sim.agent import NearestNeighbourTracker


def test_tracker_associates_and_builds_history() -> None:
    tr = NearestNeighbourTracker()
    car = np.array([[10.0, 0.0, 0.0, 4.5, 2.0, 1.6]])
    ids = [int(tr.update(0.1 * k, car + [0.5 * k, 0, 0, 0, 0, 0], np.array([0]))[0]) for k in range(11)]
    assert len(set(ids)) == 1  # moving 0.5 m per tick stays one track
    arr = tr.agent_arrays(1.0, (0.0, 0.0, 0.0), 0.5, 2, 10)  # history at 0.5 s steps, oldest first
    assert arr["agent_hist"].shape == (1, 3, 3) and arr["agent_hist_valid"].all()
    assert np.allclose(arr["agent_hist"][0, :, 0], [10.0, 12.5, 15.0])
    arr = tr.agent_arrays(1.0, (15.0, 0.0, np.pi / 2), 0.5, 2, 10)  # same track seen from a turned ego
    assert np.allclose(arr["agent_hist"][0, -1], [0.0, 0.0, -np.pi / 2])
    other = tr.update(1.1, np.array([[30.0, 5.0, 0.0, 4.5, 2.0, 1.6]]), np.array([0]))
    assert other[0] != ids[0]
    for _ in range(5):
        tr.update(1.2, np.zeros((0, 6)), np.zeros(0, np.int64))
    assert not tr.tracks  # dropped after TRACK_MAX_MISSES ticks without a detection


def test_tracker_many_detections_keep_their_tracks() -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform(-60.0, 60.0, (1000, 2))
    xy = xy[np.min(np.linalg.norm(xy[:, None] - xy[None], axis=2) + np.eye(len(xy)) * 99, axis=1) > 2.0]
    boxes = np.column_stack([xy, np.zeros(len(xy)), np.full((len(xy), 3), [4.5, 2.0, 1.6])])
    labels = np.arange(len(xy)) % 3
    tr = NearestNeighbourTracker()
    first = tr.update(0.0, boxes, labels)
    moved = boxes + [0.6, -0.4, 0, 0, 0, 0]
    perm = rng.permutation(len(xy))
    second = tr.update(0.1, moved[perm], labels[perm])
    assert np.array_equal(second, first[perm])  # every one found its own track, in any order
    assert len(tr.tracks) == len(xy)


def _cfg():
    spec = importlib.util.spec_from_file_location("_root_conftest", Path(__file__).parents[1] / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    raw = module.tiny_params()
    raw["preprocess"] = {"image_width": 64, "image_height": 48, "bev_size": 64, "bev_resolution_m": 1.0,
                         "max_points": 4000}
    raw["model"] = {"image_channels": 8, "pillar_channels": 8, "bev_channels": 16, "bev_blocks": 1,
                    "agent_hidden": 16, "planning_head": True, "num_depth_bins": 8}
    raw["carla_eval"] = {"num_scenarios": 1, "duration_s": 1.0, "planner": "imitation", "max_failure_rate": 0.0,
                         "agents": ["replay", "idm"]}
    return from_dict(raw)


@pytest.mark.slow
def test_embedded_closed_loop_end_to_end(synthetic_root: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from drivepipe.model.model import build_model
    from drivepipe.sim.harness import run_closed_loop
    from drivepipe.utils.io import sha256_file

    cfg = _cfg()
    torch.manual_seed(0)
    ckpt = tmp_path / "ckpt" / "step_000001"
    ckpt.mkdir(parents=True)
    torch.save(build_model(cfg).state_dict(), ckpt / "model.pt")
    (ckpt / "meta.json").write_text(json.dumps({"sha256": {"model.pt": sha256_file(ckpt / "model.pt")}}))
    out = tmp_path / "reports"
    metrics = run_closed_loop(cfg, ckpt, synthetic_root, out, cache_dir=None)
    assert metrics["status"] == "ok" and metrics["scenarios"] == 1 and metrics["failed"] == 0, metrics["failures"]
    for key in ("route_completion", "driving_score", "infraction_score", "collisions", "interventions", "comfort",
                "collision_rate", "nuplan_cls"):
        assert key in metrics
    assert 0.0 <= metrics["driving_score"] <= 100.0
    steps = sorted((out / "details" / "steps").glob("*.csv"))
    assert len(steps) == 10  # (model + 4 baselines) x (replay, idm) on the one scenario
    model = [p for p in steps if p.name.startswith("model__replay__")]
    assert len(model) == 1 and len(model[0].read_text().splitlines()) == 11
    assert len(list((out / "details" / "replay").glob("*.gif"))) == 2  # the model's replays only
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["backend"] == "embedded"
    assert set(saved["agents"]) == {"model", "stationary", "constant_velocity", "expert", "privileged"}
    for agent in saved["agents"].values():
        assert set(agent) == {"replay", "idm"} and "ci95" in agent["replay"] and "nuplan_cls" in agent["idm"]
