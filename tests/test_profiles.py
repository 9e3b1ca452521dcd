"""Profiles: the GPU profile is valid and has the seed's numbers; writing it keeps the user's nuPlan links."""

from __future__ import annotations

from pathlib import Path

import yaml

from drivepipe.cli.main import main
from drivepipe.config import Config, load, to_dict
from drivepipe.profiles import profile_config

REPO = Path(__file__).resolve().parents[1]


def test_cpu_profile_is_the_committed_params():
    assert to_dict(profile_config("cpu")) == to_dict(load(REPO / "params.yaml")) == to_dict(Config())


def test_gpu_profile_matches_the_seed():
    cfg = profile_config("gpu-nuplan")
    p, t = cfg.preprocess, cfg.train
    assert (p.image_width, p.image_height, len(p.cameras)) == (640, 384, 6)
    assert (p.bev_size, p.bev_resolution_m, p.pillar_size_m) == (200, 0.5, 0.25)
    assert (t.batch_size, t.amp, t.accumulate, t.workers, t.persistent_workers, t.prefetch_factor) == (
        2, "fp16", 2, 4, True, 2)
    assert cfg.data.source == "nuplan"


def test_use_profile_rewrites_params_in_block_style_and_keeps_links(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    raw = to_dict(Config())
    raw["data"]["nuplan"]["archives"] = ["/mnt/nuplan/nuplan-v1.1_mini.zip"]
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["use-profile", "gpu-nuplan", "--params", str(params)]) == 0
    cfg = load(params)
    assert cfg.preprocess.bev_size == 200 and cfg.data.nuplan.archives == ["/mnt/nuplan/nuplan-v1.1_mini.zip"]
    assert "[" not in params.read_text().replace("[]", "")  # block lists only (dvc exp run -S rewrites in block style)
    assert main(["use-profile", "cpu", "--params", str(params)]) == 0
    assert load(params).preprocess.bev_size == Config().preprocess.bev_size
