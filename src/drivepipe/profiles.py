"""Named params profiles: functions returning overrides of the defaults (no string registry of classes).

`drivepipe use-profile gpu-nuplan` rewrites params.yaml with the seed's single-24-GB-GPU profile on real
nuPlan-mini; `drivepipe use-profile cpu` restores the embedded CPU default. DVC sees the change as params, so
`dvc status` / `dvc repro` rerun exactly the stages whose params changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from drivepipe.config import Config, from_dict, to_dict


def cpu() -> dict[str, Any]:
    """The embedded default: synthetic data, small images and BEV, a light model (measured `dvc repro` time: see
    the README)."""
    return {}


def gpu_nuplan() -> dict[str, Any]:
    """The seed's profile for one 24 GB GPU on real nuPlan-mini: 6 cameras at 640x384, BEV 200x200 at 0.5 m,
    batch 2 with fp16 AMP and accumulation 2, 4 persistent workers with prefetch 2, a ResNet-18 camera trunk."""
    return {
        "data": {"source": "nuplan", "missing_blob_policy": "skip"},
        "preprocess": {"image_width": 640, "image_height": 384, "image_storage": "jpeg", "bev_size": 200,
                       "bev_resolution_m": 0.5, "pillar_size_m": 0.25, "lidar_max_range_m": 60.0, "max_points": 120000,
                       "window_stride": 10, "workers": 8},
        "model": {"backbone": "resnet18", "image_channels": 64, "pillar_channels": 64, "bev_channels": 128,
                  "bev_blocks": 2, "agent_hidden": 128, "max_detections": 200, "depth_min_m": 2.0,
                  "depth_max_m": 50.0, "num_depth_bins": 48},
        "train": {"batch_size": 2, "accumulate": 2, "amp": "fp16", "device": "cuda", "workers": 4, "pin_memory": True,
                  "persistent_workers": True, "prefetch_factor": 2, "epochs": 20, "lr": 1e-3, "warmup_steps": 500,
                  "log_every_steps": 50, "save_every_epochs": 1, "deterministic": False, "cudnn_benchmark": True},
        "evaluate": {"batch_size": 4, "num_pictures": 6},
        "carla_eval": {"num_scenarios": 20, "duration_s": 15.0},
    }


PROFILES = {"cpu": cpu, "gpu-nuplan": gpu_nuplan}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def profile_config(name: str) -> Config:
    """The validated config of a profile (defaults + its overrides)."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose from {sorted(PROFILES)}")
    return from_dict(_merge(to_dict(Config()), PROFILES[name]()))


def write_profile(name: str, params_path: Path, keep: tuple[str, ...] = ("data.nuplan",)) -> Config:
    """Write a profile to params.yaml in block style, keeping the user's `keep` subtrees (e.g. their nuPlan links)."""
    cfg = to_dict(profile_config(name))
    if params_path.is_file():
        current = yaml.safe_load(params_path.read_text()) or {}
        for dotted in keep:
            section, key = dotted.split(".")
            if key in current.get(section, {}):
                cfg[section][key] = current[section][key]
    validated = from_dict(cfg)
    params_path.write_text(yaml.safe_dump(to_dict(validated), sort_keys=False, default_flow_style=False))
    return validated
