"""Ray as the engine of preprocess and carla_eval, on a two-node local cluster (see conftest): the same cache bytes
and the same closed-loop metrics as the local engine, results in task order, worker crashes retried."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from ray_helpers import crash_once, meet

from drivepipe.config import Config, from_dict
from drivepipe.engine import EngineSpec, ordered_map

pytestmark = pytest.mark.slow
RAY = EngineSpec(kind="ray")


def _root_conftest():
    spec = importlib.util.spec_from_file_location("_root_conftest", Path(__file__).parents[1] / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tasks_spread_over_both_nodes_in_task_order(ray_cluster, tmp_path: Path) -> None:
    out = list(ordered_map(meet, [(0, str(tmp_path)), (1, str(tmp_path))], RAY))
    assert [i for i, _, _ in out] == [0, 1]
    assert all(met for _, _, met in out), "the two tasks never ran at the same time"
    assert out[0][1] != out[1][1], "both tasks ran on one node"


def test_worker_crash_is_retried_on_ray(ray_cluster, tmp_path: Path) -> None:
    marker = str(tmp_path / "crashed")
    assert list(ordered_map(crash_once, [(i, marker) for i in range(5)], RAY)) == list(range(5))
    assert Path(marker).exists()


def _preprocess_cfg(workers: int) -> Config:
    cfg = from_dict(_root_conftest().tiny_pipeline_params())
    # the test damages some lidar files on purpose: allow that share of skipped samples
    return replace(cfg, preprocess=replace(cfg.preprocess, workers=workers, failure_policy="skip",
                                           max_skipped_fraction=0.5))


def test_preprocess_cache_is_byte_identical_on_ray(ray_cluster, synthetic_root: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from drivepipe.preprocess import run as run_mod

    data = tmp_path / "nuplan_mini"
    shutil.copytree(synthetic_root, data)
    for pcd in sorted(data.rglob("*.pcd"))[::4]:
        pcd.write_bytes(pcd.read_bytes()[:40])  # broken lidar files: per-sample failures under the skip policy
    monkeypatch.setattr(run_mod, "CHUNK_WINDOWS", 3)  # many small tasks, so out-of-order completion is likely
    reports = {}
    for name, engine, workers in (("local", None, 2), ("ray", RAY, 1)):
        reports[name] = run_mod.run_preprocess(_preprocess_cfg(workers), data, tmp_path / name / "cache",
                                               tmp_path / name / "report.json", engine)
    local, ray = reports["local"], reports["ray"]
    assert 0 < local["skipped_total"] < 10 and local["samples"] > 0, local["skipped"]
    for key in ("samples", "per_split", "skipped", "skipped_total", "missing_blobs"):
        assert ray[key] == local[key], key
    assert ray["engine"] == "ray" and local["engine"] == "local"
    for f in ("data.mdb",):
        assert (tmp_path / "ray" / "cache" / f).read_bytes() == (tmp_path / "local" / "cache" / f).read_bytes()


def _closed_loop_cfg() -> Config:
    raw = _root_conftest().tiny_pipeline_params()
    # the model and two baselines (one with the log's ground truth), animation on: replay files come back too
    raw["carla_eval"].update(num_scenarios=2, duration_s=1.0, animation=True, max_failure_rate=1.0,
                             baselines=["stationary", "privileged"], workers=1)
    return from_dict(raw)


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "details" / "scenarios.csv") as fh:
        return [{k: v for k, v in row.items() if k != "wall_s"} for row in csv.DictReader(fh)]


def test_closed_loop_metrics_equal_on_ray(ray_cluster, synthetic_root: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from drivepipe.model.model import build_model
    from drivepipe.sim.harness import run_closed_loop
    from drivepipe.utils.io import sha256_file

    cfg = _closed_loop_cfg()
    torch.manual_seed(0)
    ckpt = tmp_path / "ckpt" / "step_000001"
    ckpt.mkdir(parents=True)
    torch.save(build_model(cfg).state_dict(), ckpt / "model.pt")
    (ckpt / "meta.json").write_text(json.dumps({"sha256": {"model.pt": sha256_file(ckpt / "model.pt")}}))
    local = run_closed_loop(cfg, ckpt, synthetic_root, tmp_path / "local", cache_dir=None)
    ray = run_closed_loop(cfg, ckpt, synthetic_root, tmp_path / "ray", cache_dir=None, engine=RAY)
    assert local["scenarios"] == 2 and local["jobs"] == local["completed"] == 6, local["failures"]
    assert set(local["agents"]) == {"model", "stationary", "privileged"}
    assert ray == local
    assert _rows(tmp_path / "ray") == _rows(tmp_path / "local")
    files = sorted(p.relative_to(tmp_path / "local").as_posix() for p in (tmp_path / "local").rglob("*")
                   if p.is_file() and p.name not in ("scenarios.csv", "metrics.json"))
    assert any(f.endswith(".gif") for f in files) and any("/steps/privileged__" in f for f in files)
    assert files == sorted(p.relative_to(tmp_path / "ray").as_posix() for p in (tmp_path / "ray").rglob("*")
                           if p.is_file() and p.name not in ("scenarios.csv", "metrics.json"))
    for name in files:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
