"""DVC used the way DVC users expect, on the tiny profile: clean `metrics diff` / `exp show`, speed knobs that rerun
nothing, checkpoint directories that stay resumable through checkout / queued experiments / exp apply / pull,
protected (linked) data read fine by the stages, and a queued parameter sweep.

The tests run in file order on one private copy of the built pipeline (`work_repo`).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from pipeline_repo import VENV_BIN, PipelineRepo

pytestmark = pytest.mark.slow

# Run inside a repo: is checkpoints/<experiment> resumable for the repo's params and cache? Prints the step dir.
_RESUMABLE = """
from pathlib import Path
from drivepipe.cache.lmdb_store import LmdbReader
from drivepipe.config import load
from drivepipe.train.checkpoint import Checkpointer, load_model_weights, load_train_state
from drivepipe.train.trainer import data_hashes
cfg = load("params.yaml")
exp = Path("checkpoints") / cfg.train.experiment
assert (exp / "pointers.json").is_file() and not (exp / "latest").exists(), "no pointer file"
found = Checkpointer(exp, cfg, data_hashes(LmdbReader("data/cache", expected=cfg).header)).resumable()
assert found is not None, "checkpoint dir is not resumable"
load_model_weights(found), load_train_state(found)
print(found.name, load_train_state(found)["progress"]["step"])
"""


def _resumable(repo: PipelineRepo) -> str:
    return repo.run(str(VENV_BIN / "python"), "-c", _RESUMABLE).stdout.strip()


def _clean(proc: Any) -> None:
    text = proc.stdout + proc.stderr
    assert not re.search(r"WARNING|ERROR|[Ff]ailed to load", text), text


def test_metrics_diff_and_exp_show_give_no_warning(work_repo: PipelineRepo) -> None:
    for args in (("metrics", "diff", "--all"), ("exp", "show", "--no-pager")):
        proc = work_repo.dvc(*args)
        _clean(proc)
        assert "report.md" not in proc.stdout and "resolved_config" not in proc.stdout


def test_model_artifact_is_the_exported_safetensors(work_repo: PipelineRepo) -> None:
    code = "from dvc.repo import Repo; print({n: a.path for n, a in Repo('.').artifacts.read()['dvc.yaml'].items()})"
    listed = work_repo.run(str(VENV_BIN / "python"), "-c", code).stdout
    models = f"models/{work_repo.params()['train']['experiment']}"
    assert f"'bev-model': '{models}'" in listed, listed
    for which in ("best", "latest"):
        assert (work_repo.root / models / which / "model.safetensors").is_file()
        assert not (work_repo.root / models / which / "model.pt").exists()


def test_speed_knobs_rerun_nothing(work_repo: PipelineRepo) -> None:
    for key, value in [("preprocess.workers", 2), ("data.synthetic.workers", 2), ("train.workers", 1),
                       ("train.prefetch_factor", 4), ("train.log_every_steps", 7), ("train.pin_memory", True),
                       ("train.persistent_workers", True), ("preprocess.failure_policy", "fail"),
                       ("carla_eval.carla.timeout_s", 3.0), ("data.nuplan.retries", 1)]:
        work_repo.set_param(key, value)
    assert work_repo.status() == {}
    # and the code accepts the existing LMDB cache and resumes the existing checkpoint under the changed knobs
    assert _resumable(work_repo)
    work_repo.git("checkout", "--", "params.yaml")


def test_checkout_restores_a_resumable_checkpoint_dir(work_repo: PipelineRepo) -> None:
    exp = work_repo.root / "checkpoints" / work_repo.params()["train"]["experiment"]
    before = sorted(str(p.relative_to(exp)) for p in exp.rglob("*"))
    assert "pointers.json" in before
    shutil.rmtree(exp)
    work_repo.dvc("checkout", "train")
    assert sorted(str(p.relative_to(exp)) for p in exp.rglob("*")) == before
    assert _resumable(work_repo)


def _protected_links(repo: PipelineRepo) -> list[Path]:
    """data.mdb and the dataset's .db files, asserted to be links into .dvc/cache that DVC made read-only."""
    paths = [repo.root / "data" / "cache" / "data.mdb", *sorted((repo.root / "data" / "nuplan_mini").rglob("*.db"))]
    for path in paths:
        assert path.is_symlink() or path.stat().st_nlink > 1, f"{path} is a copy, not a link to .dvc/cache"
        assert not path.stat().st_mode & 0o222, f"{path} is writable: DVC did not protect it"  # (root ignores it)
    return paths


# Run inside a repo: read every cached sample the way train and evaluate do.
_READ_CACHE = """
from drivepipe.config import load
from drivepipe.data.dataset import CacheDataset
cfg = load("params.yaml")
print(sum(len([ds[i] for i in range(len(ds))]) for ds in (CacheDataset("data/cache", cfg, s) for s in ("train", "val"))))
"""


@pytest.mark.parametrize("link", ["default", "symlink"])
def test_protected_dataset_and_cache_are_read_fine(work_repo: PipelineRepo, link: str) -> None:
    """`dvc repro` leaves its outputs as copies (DVC 3); `dvc checkout --relink` links them as .dvc/config says (hard
    links on one file system; symlinks for a cache on another disk). The linked files are read-only; the dataset and
    LMDB readers still read them, and reading changes nothing DVC tracks."""
    if link != "default":
        work_repo.dvc("config", "--local", "cache.type", link)
    work_repo.dvc("checkout", "--relink")
    assert all(p.is_symlink() == (link == "symlink") for p in _protected_links(work_repo))
    work_repo.run(str(VENV_BIN / "python"), "-m", "drivepipe.cli.main", "verify-data", "--root", "data/nuplan_mini")
    assert int(work_repo.run(str(VENV_BIN / "python"), "-c", _READ_CACHE).stdout) > 0
    assert work_repo.status() == {}
    if link != "default":
        (work_repo.root / ".dvc" / "config.local").unlink()
        work_repo.dvc("checkout", "--relink")


def _queue_idle(repo: PipelineRepo) -> bool:
    out = repo.dvc("queue", "status").stdout
    return not re.search(r"\b(Queued|Running)\b", out)


def _experiments(repo: PipelineRepo) -> dict[str, dict[str, Any]]:
    """{experiment name: its `data`} from `dvc exp show --json` (baseline excluded)."""
    found = {}
    for baseline in json.loads(repo.dvc("exp", "show", "--json").stdout):
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs", []):
                found[rev.get("name") or rev["rev"]] = rev.get("data", {})
    return found


def test_queued_sweep_show_diff_and_apply(work_repo: PipelineRepo) -> None:
    """README "Parameter sweeps": queue three det_weight values, run two at a time, compare, apply one."""
    # kept cheap: two values, up to the train stage, two optimizer steps each
    work_repo.dvc("exp", "run", "--queue", "-S", "loss.det_weight=0.5,2", "-S", "train.max_steps=2", "train")
    work_repo.dvc("queue", "start", "-j", "2")
    deadline = time.monotonic() + 900
    while not _queue_idle(work_repo):
        assert time.monotonic() < deadline, work_repo.dvc("queue", "status").stdout
        time.sleep(2)
    assert "Failed" not in work_repo.dvc("queue", "status").stdout, work_repo.dvc("queue", "status").stdout
    exps = _experiments(work_repo)
    weights = {name: d["params"]["params.yaml"]["data"]["loss"]["det_weight"] for name, d in exps.items()}
    assert sorted(weights.values()) == [0.5, 2.0], weights
    for data in exps.values():
        assert data["metrics"]["reports/train/summary.json"]["data"], "experiment without train metrics"
    low, high = (min(weights, key=weights.get), max(weights, key=weights.get))
    diff = json.loads(work_repo.dvc("exp", "diff", low, high, "--json").stdout)
    change = diff["params"]["params.yaml"]["loss.det_weight"]
    assert (change["old"], change["new"]) == (0.5, 2.0), diff
    _clean(work_repo.dvc("exp", "show", "--no-pager"))

    work_repo.dvc("exp", "apply", high)
    assert work_repo.params()["loss"]["det_weight"] == 2.0
    assert work_repo.status("train") == {}
    assert _resumable(work_repo).endswith(" 2")  # the experiment's own checkpoint (step 2), ready to resume
    work_repo.commit("apply det_weight 2.0")


def test_pull_restores_a_resumable_checkpoint_dir(work_repo: PipelineRepo, tmp_path: Path) -> None:
    """checkpoints/ stay local by default (push: false); a team that pushes them gets them back resumable."""
    spec = work_repo.root / "dvc.yaml"
    spec.write_text(spec.read_text().replace("persist: true\n          push: false", "persist: true"))
    work_repo.dvc("remote", "add", "-d", "storage", str(tmp_path / "remote"))
    work_repo.commit("push checkpoints too")
    work_repo.dvc("push", "train")
    exp = work_repo.root / "checkpoints" / work_repo.params()["train"]["experiment"]
    before = sorted(str(p.relative_to(exp)) for p in exp.rglob("*"))
    shutil.rmtree(work_repo.root / "checkpoints")
    shutil.rmtree(work_repo.root / ".dvc" / "cache")
    work_repo.dvc("pull", "train")
    assert sorted(str(p.relative_to(exp)) for p in exp.rglob("*")) == before
    assert _resumable(work_repo)
    assert work_repo.status("train") == {}
