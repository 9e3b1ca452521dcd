"""The stage driver: failure policy, report, end-to-end run on hand-made bundles, show-sample, CLI wiring."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from bundle_factory import make_bundle, small_config
from drivepipe.cache.lmdb_store import LmdbReader
from drivepipe.errors import DataError
from drivepipe.preprocess import run as run_mod
from drivepipe.preprocess.windows import Window


def _windows(log: str, n: int, split: str = "train") -> list[Window]:
    return [Window(log, f"{i:016x}", 1000 + i, f"{log}-s{i % 2}", "stationary", "us-ma-boston",
                   "val" if i % 2 else split) for i in range(n)]


def _loader(bad: set[str]):
    def load(w: Window):
        if w.token in bad:
            return make_bundle(channels=("CAM_F0",), token=w.token, log_name=w.log_name)  # CAM_L0 missing
        return make_bundle(seed=int(w.token, 16), token=w.token, log_name=w.log_name)
    return load


def test_failure_policy_skip_counts_reasons():
    cfg = small_config(failure_policy="skip")
    res = run_mod.process_windows(_loader({"0000000000000001"}), _windows("log_a", 3), cfg)
    assert [k for k, _, _ in res.records] == ["log_a/0000000000000000", "log_a/0000000000000002"]
    assert res.skipped == Counter({"DataError: camera CAM_L0 missing": 1}) and res.error is None


def test_failure_policy_fail_names_the_token():
    cfg = small_config(failure_policy="fail")
    res = run_mod.process_windows(_loader({"0000000000000001"}), _windows("log_a", 3), cfg)
    assert res.error is not None and "log_a/0000000000000001" in res.error[0] and "CAM_L0" in res.error[1]


@pytest.fixture
def fake_dataset(monkeypatch):
    """run_preprocess over two fake logs: planning and bundle loading replaced by hand-made bundles."""
    def plan(cfg, data_root):
        tasks = [run_mod.LogTask(log, Path("x.db"), Path("s"), Path("m"), tuple(_windows(log, 3)), cfg)
                 for log in ("log_a", "log_b")]
        return tasks, "fake-manifest", 2

    def load_task(task):
        return run_mod.process_windows(_loader({"0000000000000002"}), list(task.windows), task.cfg, task.log_name)

    monkeypatch.setattr(run_mod, "plan_tasks", plan)
    monkeypatch.setattr(run_mod, "_load_log_task", load_task)


def test_run_preprocess_end_to_end(tmp_path, fake_dataset):
    cfg = small_config(max_skipped_fraction=0.5)  # 2 of the 6 fake windows lack a camera
    report = run_mod.run_preprocess(cfg, tmp_path / "data", tmp_path / "cache", tmp_path / "reports/preprocess.json")
    saved = json.loads((tmp_path / "reports/preprocess.json").read_text())
    assert saved["samples"] == report["samples"] == 4 and saved["skipped"] == {"DataError: camera CAM_L0 missing": 2}
    assert saved["per_split"] == {"train": 2, "val": 2} and saved["per_location"] == {"us-ma-boston": 4}
    assert saved["per_scenario_type"] == {"stationary": 4} and saved["samples_per_s"] > 0
    header = LmdbReader(tmp_path / "cache", expected=cfg).header
    assert header["count"] == 4 and header["data_manifest_hash"] == "fake-manifest"
    from drivepipe.cli.main import main

    assert main(["show-sample", "--cache", str(tmp_path / "cache"), "--index", "1", "--out",
                 str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 10_000


def test_run_preprocess_fail_policy_leaves_no_cache(tmp_path, fake_dataset):
    cfg = small_config(failure_policy="fail")
    with pytest.raises(DataError, match="log_a/0000000000000002"):
        run_mod.run_preprocess(cfg, tmp_path / "data", tmp_path / "cache", tmp_path / "r.json")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "cache.tmp").exists()


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_unreadable_log_follows_policy(tmp_path, policy):
    cfg = small_config(failure_policy=policy)
    (tmp_path / "bad.db").write_bytes(b"not sqlite")
    task = run_mod.LogTask("bad", tmp_path / "bad.db", tmp_path, tmp_path, tuple(_windows("bad", 3)), cfg)
    res = run_mod._load_log_task(task)  # never raises: errors cross the process boundary as data
    if policy == "fail":
        assert res.error is not None and "bad.db" in res.error[0] and not res.skipped
    else:
        assert res.error is None and sum(res.skipped.values()) == 3
