"""Sharing a run through a DVC remote: push, clone, `dvc repro --pull --allow-missing`, `dvc pull`.

The remote is a local directory. Outputs marked `push: false` in dvc.yaml (the intermediate training checkpoints) must
stay local; everything else the lock file references (data, cache, the final/best model under models/) must be on
the remote, so a fresh clone reproduces nothing and can re-evaluate without retraining.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from pipeline_repo import PipelineRepo

pytestmark = pytest.mark.slow


def _remote_hashes(remote: Path) -> set[str]:
    """md5 hashes stored in a DVC 3 local remote (`files/md5/ab/cdef...` -> `abcdef...`, `.dir` kept)."""
    return {p.parent.name + p.name for p in (remote / "files" / "md5").glob("*/*")}


def _dir_entries(repo: PipelineRepo, dir_md5: str) -> set[str]:
    """md5 of every file listed in a directory output's `.dir` manifest, read from the local cache."""
    manifest = repo.root / ".dvc" / "cache" / "files" / "md5" / dir_md5[:2] / dir_md5[2:]
    return {entry["md5"] for entry in json.loads(manifest.read_text())}


def _outs(repo: PipelineRepo) -> dict[str, str]:
    """{out path: md5} for every cached output in dvc.lock."""
    spec = yaml.safe_load((repo.root / "dvc.yaml").read_text())
    uncached = {next(iter(o)) for s in spec["stages"].values() for o in s.get("outs", []) + s.get("metrics", [])
                if isinstance(o, dict) and next(iter(o.values())).get("cache") is False}
    return {o["path"]: o["md5"] for s in repo.lock()["stages"].values() for o in s.get("outs", [])
            if o["path"] not in uncached}


def _ran(log: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", log))


@pytest.fixture(scope="module")
def pushed(work_repo: PipelineRepo, tmp_path_factory: pytest.TempPathFactory) -> tuple[PipelineRepo, Path]:
    remote = tmp_path_factory.mktemp("remote") / "storage"
    work_repo.dvc("remote", "add", "-d", "storage", str(remote))
    work_repo.commit("default DVC remote")
    work_repo.dvc("push")
    return work_repo, remote


def test_push_sends_data_and_keeps_checkpoints_local(pushed: tuple[PipelineRepo, Path]) -> None:
    repo, remote = pushed
    stored = _remote_hashes(remote)
    outs = _outs(repo)
    ckpt = f"checkpoints/{repo.params()['train']['experiment']}"
    assert ckpt in outs
    for path in ("data/nuplan_mini", "data/cache"):
        assert outs[path] in stored, f"{path} was not pushed"
        assert _dir_entries(repo, outs[path]) <= stored, f"files of {path} are missing on the remote"
    pushed_files = set().union(*(_dir_entries(repo, md5) for p, md5 in outs.items()
                                 if p != ckpt and md5.endswith(".dir")))
    assert outs[ckpt] not in stored, "the checkpoint dir (push: false) was pushed"
    local_only = _dir_entries(repo, outs[ckpt]) - pushed_files  # e.g. optimizer state, intermediate weights
    assert local_only, "nothing in the checkpoint dir differs from pushed files: the check would prove nothing"
    leaked = local_only & stored
    assert not leaked, f"checkpoint files reached the remote: {sorted(leaked)}"


def test_final_model_is_pushed(pushed: tuple[PipelineRepo, Path]) -> None:
    """The issue's split: intermediate checkpoints stay local, the final/best weights (models/<experiment>) travel."""
    repo, remote = pushed
    stored = _remote_hashes(remote)
    models = f"models/{repo.params()['train']['experiment']}"
    md5 = _outs(repo)[models]
    assert md5 in stored and _dir_entries(repo, md5) <= stored, f"{models} was not (fully) pushed"
    manifest = repo.root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    names = {Path(entry["relpath"]).name for entry in json.loads(manifest.read_text())}
    assert names & {"model.pt", "model.safetensors"}, f"{models} holds no weights: {sorted(names)}"


def test_fresh_clone_reproduces_nothing_and_pulls_the_cache(pushed: tuple[PipelineRepo, Path],
                                                            tmp_path: Path) -> None:
    repo, _ = pushed
    clone = PipelineRepo(tmp_path / "clone")
    repo.git("clone", "-q", str(repo.root), str(clone.root))
    lock_before = (clone.root / "dvc.lock").read_text()

    proc = clone.dvc("repro", "--pull", "--allow-missing")
    assert _ran(proc.stdout) == set(), proc.stdout
    assert (clone.root / "dvc.lock").read_text() == lock_before

    clone.dvc("pull", "--with-deps", "preprocess")
    assert (clone.root / "data" / "cache" / "data.mdb").is_file()
    assert (clone.root / "data" / "nuplan_mini").is_dir()
    assert clone.status("preprocess") == {}
    shutil.rmtree(clone.root)


def test_clone_retrains_after_a_loss_change_pulling_only_inputs(pushed: tuple[PipelineRepo, Path],
                                                               tmp_path: Path) -> None:
    """CI after a loss change: pull the cache instead of preprocessing again, then train, evaluate, carla_eval."""
    repo, _ = pushed
    clone = PipelineRepo(tmp_path / "clone")
    repo.git("clone", "-q", str(repo.root), str(clone.root))
    clone.set_param("loss.det_weight", 3.0)
    proc = clone.dvc("repro", "--pull", "--allow-missing")
    assert _ran(proc.stdout) == {"train", "evaluate", "carla_eval"}, proc.stdout
    lock = clone.lock()["stages"]
    assert lock["preprocess"] == repo.lock()["stages"]["preprocess"]
    assert (clone.root / "data" / "cache" / "data.mdb").is_file()
    assert clone.status() == {}
    shutil.rmtree(clone.root)

def test_clone_reevaluates_without_retraining(pushed: tuple[PipelineRepo, Path], tmp_path: Path) -> None:
    """CI after an evaluate-only change: pull the pushed model and the cache, rerun only evaluate."""
    repo, _ = pushed
    clone = PipelineRepo(tmp_path / "clone")
    repo.git("clone", "-q", str(repo.root), str(clone.root))
    clone.set_param("evaluate.num_pictures", 0)
    proc = clone.dvc("repro", "--pull", "--allow-missing", check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _ran(proc.stdout) == {"evaluate"}
    # Only evaluate is checked: the clone never has checkpoints/ (push: false) nor the raw data (not needed here).
    assert clone.status("evaluate") == {}
    shutil.rmtree(clone.root)
