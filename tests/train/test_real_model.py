"""End to end with the real parts: LMDB cache -> CacheDataset -> DrivingModel + MultiTaskLoss (uncertainty) through
the `drivepipe train` CLI, then a split run (stop at max_steps, resume) that must end bitwise identical."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from _standin import make_sample, tiny_params

from drivepipe.cli.main import main
from drivepipe.config import from_dict, to_dict
from drivepipe.train.checkpoint import load_model_weights, load_train_state, resolve_checkpoint
from drivepipe.train.trainer import fit


def _params(**train) -> dict:
    params = tiny_params(epochs=2, **train)
    params["preprocess"].update(image_storage="raw", num_depth_bins=4)
    params["model"] = {"image_channels": 4, "pillar_channels": 4, "bev_channels": 8, "bev_blocks": 1,
                       "num_modes": 2, "agent_hidden": 8}
    params["loss"] = {"balancing": "uncertainty"}
    return params


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from drivepipe.cache.lmdb_store import encode_sample
    from drivepipe.preprocess.run import LogResult, header_common, write_cache

    cfg = from_dict(_params())
    rng = np.random.default_rng(0)
    res = LogResult("log_a")
    for i in range(12):
        sample, token = make_sample(cfg, rng), f"{i:016x}"
        meta = {"log": "log_a", "token": token, "timestamp_us": i, "location": "us-ma-boston",
                "scenario_type": "stationary", "split": "val" if i % 4 == 0 else "train"}
        res.records.append((f"log_a/{token}", encode_sample(sample, meta, "raw", 95),
                            {**meta, "num_points": len(sample["points"])}))
    out = tmp_path_factory.mktemp("cache") / "cache"
    write_cache([res], out, header_common(cfg, "manifest"))
    return out


@pytest.mark.slow
def test_cli_train_then_split_run_matches(cache: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(to_dict(from_dict(_params()))))
    a = tmp_path / "a"
    rc = main(["train", "--params", str(tmp_path / "params.yaml"), "--cache", str(cache),
               "--checkpoints", str(a / "ckpt"), "--models", str(a / "models"), "--reports", str(a / "reports")])
    assert rc == 0
    summary = json.loads((a / "reports" / "summary.json").read_text())
    assert summary["step"] == 8 and {"val/score", "val/seg_iou", "val/min_ade", "val/loss/total"} <= set(summary)
    assert (a / "reports" / "resolved_config.json").is_file()
    for which in ("best", "latest"):  # the exported (pushed) weights equal the checkpoint's
        exported, _ = load_model_weights(a / "models" / "default" / which)
        original, _ = load_model_weights(resolve_checkpoint(a / "ckpt" / "default", which))
        assert exported.keys() == original.keys() and all(torch.equal(exported[k], original[k]) for k in exported)
    meta = json.loads((resolve_checkpoint(a / "ckpt" / "default", "latest") / "meta.json").read_text())
    assert len(meta["header_hash"]) == 64 and meta["manifest_hash"] == "manifest"

    b = tmp_path / "b"
    assert fit(from_dict(_params(max_steps=3)), cache, b / "ckpt", b / "reports")["step"] == 3
    assert fit(from_dict(_params()), cache, b / "ckpt", b / "reports")["step"] == 8
    (wa, _), (wb, _) = (load_model_weights(resolve_checkpoint(d / "ckpt" / "default", "latest")) for d in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    la, lb = (load_train_state(d / "ckpt" / "default" / "latest")["loss_module"] for d in (a, b))
    assert la.keys() == lb.keys() and all(torch.equal(la[k], lb[k]) for k in la)
