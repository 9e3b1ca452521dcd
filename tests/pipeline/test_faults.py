"""Faults a user meets: a `dvc repro` killed with SIGKILL mid-stage, and bad params.

Each kill test works on a copy of the undisturbed reference run and starts the stage with `dvc repro -f -s <stage>`.
After the SIGKILL, `dvc repro` (and, for cached outputs, a forced rerun of the stage itself) must finish and produce
what the reference produced: the same dvc.lock md5 for deterministic outputs, the same final weights.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from pipeline_repo import PipelineRepo, kill_group, stage_running, wait_for

pytestmark = pytest.mark.slow


def _has_db(repo: PipelineRepo) -> bool:
    return any((repo.root / "data" / "nuplan_mini.tmp").rglob("*.db"))


def _cache_tmp(repo: PipelineRepo) -> bool:
    return (repo.root / "data" / "cache.tmp").exists()


def _first_checkpoint(repo: PipelineRepo) -> bool:
    return any(p.is_dir() and not p.name.endswith(".tmp")
               for p in (repo.root / "checkpoints" / "default").glob("step_*"))


def _running_a_while(seconds: float) -> Callable[[PipelineRepo], bool]:
    started: list[float] = []

    def check(_: PipelineRepo) -> bool:
        started.append(time.monotonic())
        return started[-1] - started[0] >= seconds
    return check


def _kill_mid_stage(repo: PipelineRepo, stage: str, mid_work: Callable[[PipelineRepo], bool],
                    log: Path) -> None:
    """`dvc repro -f -s <stage>`; SIGKILL its process group once the stage is running and `mid_work` holds."""
    proc = repo.spawn_dvc("repro", "-f", "-s", stage, log=log)
    try:
        wait_for(lambda: stage_running(stage, proc.pid), 120, f"{stage} to start", proc)
        wait_for(lambda: mid_work(repo), 120, f"{stage} to be mid-work", proc, poll=0.02)
        assert proc.poll() is None, f"{stage} finished before it could be killed:\n{log.read_text()[-3000:]}"
    finally:
        kill_group(proc)
    assert not stage_running(stage, proc.pid)


@pytest.fixture()
def repo(built_repo: PipelineRepo, tmp_path: Path) -> PipelineRepo:
    """A fresh copy of the built pipeline per test."""
    return built_repo.copy(tmp_path / "repo")


@pytest.mark.parametrize(("stage", "out", "debris", "mid_work"), [
    ("download", "data/nuplan_mini", "data/nuplan_mini.tmp", _has_db),
    ("preprocess", "data/cache", "data/cache.tmp", _cache_tmp),
])
def test_kill_during_data_stage_then_repro(repo: PipelineRepo, built_repo: PipelineRepo, tmp_path: Path,
                                           stage: str, out: str, debris: str, mid_work: Callable) -> None:
    _kill_mid_stage(repo, stage, mid_work, tmp_path / "killed.log")

    # What a user does next: `dvc repro`. The lock still matches, so DVC restores the output from its cache.
    repo.dvc("repro")
    assert repo.out_hash(stage, out) == built_repo.out_hash(stage, out)
    assert repo.status() == {}

    # The stage itself must also recover: a forced rerun over the killed run's leftovers gives the same bytes.
    proc = repo.dvc("repro", "-f", "-s", stage)
    assert f"Running stage '{stage}'" in proc.stdout
    assert repo.out_hash(stage, out) == built_repo.out_hash(stage, out), f"{out} differs after the rerun"
    assert not (repo.root / debris).exists(), "the rerun left the killed run's tmp dir behind"
    assert repo.status() == {}, "a deterministic rerun must leave every later stage up to date"


def test_kill_during_train_resumes_to_the_same_weights(repo: PipelineRepo, built_repo: PipelineRepo,
                                                        tmp_path: Path) -> None:
    import torch

    # Start from no checkpoints at all (as on a first run), kill after the first checkpoint is saved.
    shutil.rmtree(repo.root / "checkpoints" / "default")
    _kill_mid_stage(repo, "train", _first_checkpoint, tmp_path / "killed.log")
    proc = repo.dvc("repro", "train")
    assert "Running stage 'train'" in proc.stdout
    assert "resumed from" in proc.stderr, "the rerun should resume from the checkpoint the killed run saved"

    def latest(root: Path) -> Path:  # checkpoints/<experiment>/pointers.json names the latest step directory
        exp = root / "checkpoints" / "default"
        return exp / json.loads((exp / "pointers.json").read_text())["latest"] / "model.pt"

    ours = torch.load(latest(repo.root), map_location="cpu", weights_only=True)
    ref = torch.load(latest(built_repo.root), map_location="cpu", weights_only=True)
    assert ours.keys() == ref.keys()
    differ = [k for k in ref if not torch.equal(ours[k], ref[k])]
    assert not differ, f"resumed training ended with different weights: {differ[:5]}"
    summary = yaml.safe_load((repo.root / "reports/train/summary.json").read_text())
    ref_summary = yaml.safe_load((built_repo.root / "reports/train/summary.json").read_text())
    assert summary["step"] == ref_summary["step"]
    assert repo.status("train") == {}
    _assert_same_step_logs(repo.root / "reports/train/live", built_repo.root / "reports/train/live")


def _assert_same_step_logs(ours: Path, ref: Path) -> None:
    """The resumed dvclive history has the reference's steps (no gap, no duplicate) and, for losses, its values."""
    ref_files = sorted(p.relative_to(ref) for p in ref.rglob("*.tsv"))
    assert ref_files, "the reference run logged no dvclive step metrics"
    assert sorted(p.relative_to(ours) for p in ours.rglob("*.tsv")) == ref_files
    for rel in ref_files:
        mine, theirs = (ours / rel).read_text().splitlines(), (ref / rel).read_text().splitlines()
        assert [r.split("\t")[0] for r in mine] == [r.split("\t")[0] for r in theirs], f"{rel}: steps differ"
        if "loss" in rel.parts:
            assert mine == theirs, f"{rel}: logged losses differ after the resume"


def test_kill_during_evaluate_then_repro(repo: PipelineRepo, built_repo: PipelineRepo, tmp_path: Path) -> None:
    _kill_mid_stage(repo, "evaluate", _running_a_while(2.0), tmp_path / "killed.log")
    proc = repo.dvc("repro")
    assert "Running stage 'evaluate'" in proc.stdout  # its outputs are not cached, so it must run again
    for rel in ("reports/evaluate/metrics.json", "reports/evaluate/exports"):
        assert repo.out_hash("evaluate", rel) == built_repo.out_hash("evaluate", rel), f"{rel} differs"
    assert repo.status() == {}


BAD_PARAMS = [
    ("loss.det_wieght", 1.0, "unknown key"),         # typo: unknown key
    ("train.batch_size", "two", "expected int"),      # wrong type
    ("preprocess.bev_size", 4, "out of range"),       # out of range
]


@pytest.fixture(scope="module")
def bad_params_repo(built_repo: PipelineRepo, tmp_path_factory: pytest.TempPathFactory) -> PipelineRepo:
    return built_repo.copy(tmp_path_factory.mktemp("bad_params") / "repo")


@pytest.mark.parametrize(("key", "value", "problem"), BAD_PARAMS)
def test_bad_params_fail_fast_naming_the_key(bad_params_repo: PipelineRepo, key: str, value: object,
                                             problem: str) -> None:
    repo = bad_params_repo
    repo.git("checkout", "--", "params.yaml")
    ckpt_mtimes = repo.mtimes("checkpoints")
    repo.set_param(key, value)
    start = time.monotonic()
    proc = repo.dvc("repro", check=False)
    elapsed = time.monotonic() - start
    assert proc.returncode != 0
    assert key in proc.stderr + proc.stdout and problem in proc.stderr + proc.stdout, proc.stderr[-3000:]
    assert "Running stage 'download'" not in proc.stdout, "upstream stages that the key does not feed ran"
    assert repo.mtimes("checkpoints") == ckpt_mtimes, "the failing run touched the checkpoints"
    assert elapsed < 60, f"failing on a bad param took {elapsed:.0f} s"


def test_missing_data_path_fails_naming_it(bad_params_repo: PipelineRepo) -> None:
    repo = bad_params_repo
    repo.git("checkout", "--", "params.yaml")
    missing = str(repo.root / "no-such-nuplan-folder")
    repo.set_param("data.source", "nuplan")
    repo.set_param("data.nuplan.folders", [missing])
    proc = repo.dvc("repro", "download", check=False)
    assert proc.returncode != 0
    assert "no-such-nuplan-folder" in proc.stderr + proc.stdout, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, "a user error must be one clear line, not a traceback"
