"""Session fixtures shared across test folders: a tiny synthetic nuPlan-format dataset, made in code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("DVCLIVE_TEST", "true")

REPO = Path(__file__).resolve().parents[1]


def tiny_params() -> dict:
    """A params dict small enough for CPU tests: 3 logs (train, val, test) x 6 scenes x 1 s, 96x54 images, 16 lidar beams,
    every camera frame of the 10 Hz cameras written (the full recording: the format tests check its timing; the
    default's partial release is tested in tests/world/test_format_fidelity.py)."""
    return {
        "data": {"synthetic": {"num_logs": 3, "scenes_per_log": 6, "scene_duration_s": 1.0, "image_width": 96,
                               "image_height": 54, "num_vehicles": 16, "num_bicycles": 1, "num_pedestrians": 8,
                               "num_static": 3, "lidar_beams": 16, "lidar_azimuth_step_deg": 2.0,
                               "camera_stride": 1, "edge_scene_cameras": True, "lidar_release": "all",
                               "locations": ["us-nv-las-vegas-strip", "sg-one-north"]}},
    }


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic dataset in the documented nuPlan layout (generated once per test session)."""
    from drivepipe.config import from_dict
    from drivepipe.world.generate import generate_dataset

    cfg = from_dict(tiny_params())
    root = tmp_path_factory.mktemp("nuplan") / "nuplan_mini"
    generate_dataset(cfg.data, root, progress=False)
    return root


def tiny_pipeline_params() -> dict:
    """The tiny profile of every stage (tests/pipeline/tiny_params.yaml) with the session dataset's data section."""
    import yaml

    params = yaml.safe_load((REPO / "tests" / "pipeline" / "tiny_params.yaml").read_text())
    params["data"]["synthetic"].update(tiny_params()["data"]["synthetic"])
    return params


@pytest.fixture(scope="session")
def tiny_trained(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """preprocess -> train (a few steps) on the session dataset; returns paths and the config."""
    from drivepipe.config import from_dict
    from drivepipe.preprocess.run import run_preprocess
    from drivepipe.train.checkpoint import export_models
    from drivepipe.train.trainer import fit

    cfg = from_dict(tiny_pipeline_params())
    work = tmp_path_factory.mktemp("tiny_trained")
    run_preprocess(cfg, synthetic_root, work / "cache", work / "preprocess.json")
    fit(cfg, work / "cache", work / "checkpoints", work / "reports_train")
    export_models(work / "checkpoints" / cfg.train.experiment, work / "models" / cfg.train.experiment)
    return {"cfg": cfg, "cache": work / "cache", "checkpoints": work / "checkpoints", "models": work / "models",
            "data": synthetic_root, "work": work}
