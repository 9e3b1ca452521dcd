"""The real path: synthetic nuPlan-format dataset -> reader -> run_preprocess -> cache -> CacheDataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drivepipe.cache.lmdb_store import LmdbReader
from drivepipe.config import LOCATIONS, from_dict
from drivepipe.data.dataset import CacheDataset
from drivepipe.preprocess.run import merge_shards, run_preprocess
from drivepipe.sample import collate, validate_sample

PREPROCESS = {"cameras": ["CAM_F0", "CAM_L0"], "image_width": 64, "image_height": 48, "bev_size": 64,
              "window_stride": 8, "history_steps": 2, "future_steps": 2, "max_points": 2000, "workers": 1,
              "val_logs": 1, "test_logs": 1}  # the session world has 3 logs


def _cfg(**overrides):
    return from_dict({"preprocess": {**PREPROCESS, **overrides}})


def _assert_splits_disjoint(header: dict, report: dict) -> None:
    """No log (hence no scene) in two splits, checked on what the cache header says and on the stored keys."""
    logs = header["log_splits"]
    assert set(logs) == {"train", "val", "test"} and all(logs.values())
    assert sum(map(len, logs.values())) == len(set().union(*map(set, logs.values())))  # pairwise disjoint
    assert report["splits"] == logs
    for split, counts in report["split_counts"].items():
        assert counts["logs"] <= len(logs[split]) and counts["scenes"] >= counts["logs"]
        assert sum(counts["distinct_objects"].values()) >= 0
    for split, idx in header["splits"].items():
        assert idx and {header["keys"][i].split("/")[0] for i in idx} <= set(logs[split])


@pytest.mark.slow
def test_preprocess_synthetic_dataset(synthetic_root: Path, tmp_path: Path):
    cfg = _cfg()
    report = run_preprocess(cfg, synthetic_root, tmp_path / "cache", tmp_path / "preprocess.json")
    assert report["samples"] > 0 and report["skipped_total"] == 0
    assert json.loads((tmp_path / "preprocess.json").read_text())["samples"] == report["samples"]
    _assert_splits_disjoint(LmdbReader(tmp_path / "cache").header, report)
    items = []
    for split in ("train", "val", "test"):
        ds = CacheDataset(tmp_path / "cache", cfg, split)
        assert len(ds) == report["per_split"][split]
        items += [ds[i] for i in range(min(2, len(ds)))]
    for item in items:
        validate_sample(item)
        assert item["meta"]["location"] in LOCATIONS
    batch = collate(items)
    assert batch["images"].shape[1:] == (2, 3, 48, 64) and batch["box_valid"].any()
    # shards built separately and merged == the single-run cache
    for k in range(2):
        run_preprocess(_cfg(shard_index=k, shard_count=2), synthetic_root, tmp_path / f"shard{k}", tmp_path / "r.json")
    merge_shards([tmp_path / "shard1", tmp_path / "shard0"], tmp_path / "merged")
    assert (tmp_path / "merged/data.mdb").read_bytes() == (tmp_path / "cache/data.mdb").read_bytes()
    # a process pool (tasks handed out in pairs) writes the same bytes as one process
    run_preprocess(_cfg(workers=2), synthetic_root, tmp_path / "pooled", tmp_path / "r.json")
    assert (tmp_path / "pooled/data.mdb").read_bytes() == (tmp_path / "cache/data.mdb").read_bytes()
