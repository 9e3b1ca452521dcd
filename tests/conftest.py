"""Session fixtures shared across test folders: a tiny synthetic nuPlan-format dataset, made in code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("DVCLIVE_TEST", "true")

REPO = Path(__file__).resolve().parents[1]


def tiny_params() -> dict:
    """A params dict small enough for CPU tests: 2 logs x 5 scenes x 1 s, 96x54 images, 16 lidar beams."""
    return {
        "data": {"synthetic": {"num_logs": 2, "scenes_per_log": 5, "scene_duration_s": 1.0, "image_width": 96,
                               "image_height": 54, "num_vehicles": 6, "num_bicycles": 1, "num_pedestrians": 3,
                               "num_static": 3, "lidar_beams": 16, "lidar_azimuth_step_deg": 2.0,
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
