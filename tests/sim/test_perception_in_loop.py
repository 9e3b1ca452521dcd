"""Perception quality changes driving: the same scenario driven by a model that 'sees' a vehicle in every BEV cell
and by one that sees nothing must give different closed-loop metrics (phantom obstacles make the planner brake)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drivepipe.config import from_dict


def _cfg():
    raw = {"data": {"synthetic": {"num_logs": 2, "scenes_per_log": 5, "scene_duration_s": 1.0}},
           "preprocess": {"cameras": ["CAM_F0", "CAM_B0"], "image_width": 64, "image_height": 32, "bev_size": 16,
                          "bev_resolution_m": 2.0, "pillar_size_m": 1.0,
                          "history_steps": 2, "future_steps": 2, "occupancy_future_steps": 1},
           "model": {"image_channels": 8, "pillar_channels": 8, "bev_channels": 16, "bev_blocks": 1,
                     "agent_hidden": 16, "max_detections": 16 * 16, "num_depth_bins": 8},  # every cell of the vehicle class
           "carla_eval": {"num_scenarios": 1, "duration_s": 2.0, "max_failure_rate": 0.0, "animation": False,
                          "agents": ["replay"], "baselines": [], "workers": 1}}
    return from_dict(raw)


def _checkpoint(cfg, root: Path, heatmap_bias: float) -> Path:
    import torch

    from drivepipe.model.model import build_model
    from drivepipe.utils.io import sha256_file

    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        head = model.heads["det"].heatmap[-1]
        head.weight.zero_()
        head.bias.fill_(-20.0)
        head.bias[0] = heatmap_bias  # class 0 = vehicle: +20 -> a confident vehicle peak everywhere
    ckpt = root / "step_000001"
    ckpt.mkdir(parents=True)
    torch.save(model.state_dict(), ckpt / "model.pt")
    (ckpt / "meta.json").write_text(json.dumps({"sha256": {"model.pt": sha256_file(ckpt / "model.pt")}}))
    return ckpt


@pytest.mark.slow
def test_closed_loop_metrics_change_with_the_checkpoint(synthetic_root: Path, tmp_path: Path) -> None:
    from drivepipe.sim.harness import run_closed_loop

    cfg = _cfg()
    blind = run_closed_loop(cfg, _checkpoint(cfg, tmp_path / "blind", -20.0), synthetic_root, tmp_path / "a",
                            cache_dir=None)
    phantom = run_closed_loop(cfg, _checkpoint(cfg, tmp_path / "phantom", 20.0), synthetic_root, tmp_path / "b",
                              cache_dir=None)
    assert blind["failed"] == phantom["failed"] == 0

    def mean_speed(out: Path) -> float:
        import csv

        (steps,) = (out / "details" / "steps").glob("model__replay__*.csv")
        rows = list(csv.DictReader(steps.open()))
        return sum(float(r["speed_mps"]) for r in rows) / len(rows)

    assert mean_speed(tmp_path / "b") < mean_speed(tmp_path / "a") - 0.2  # phantom obstacles slow the ego
    assert phantom["route_completion"] <= blind["route_completion"]
