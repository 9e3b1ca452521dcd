"""The pipeline as its users drive it: `dvc repro`, `dvc status`, param edits, `dvc exp run`, metrics and plots.

All tests share one built tiny-profile repo (`built_repo`, session) and one private copy of it (`work_repo`); the
tests below run in file order and each leaves the copy committed and up to date for the next.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pipeline_repo import STAGES, PipelineRepo

pytestmark = pytest.mark.slow


def _ran(log: str) -> set[str]:
    """Stages whose command DVC actually ran, from the `Running stage '<name>':` lines of its output."""
    return set(re.findall(r"Running stage '([\w-]+)'", log))


def _declared_outputs(repo: PipelineRepo) -> dict[str, list[str]]:
    """Every `outs` and `metrics` path of every stage in dvc.yaml, with ${...} resolved from params.yaml."""
    spec = yaml.safe_load((repo.root / "dvc.yaml").read_text())
    params = repo.params()

    def resolve(text: str) -> str:
        def lookup(match: re.Match) -> str:
            node: Any = params
            for key in match.group(1).split("."):
                node = node[key]
            return str(node)
        return re.sub(r"\$\{([\w.]+)\}", lookup, text)

    declared = {}
    for name, stage in spec["stages"].items():
        entries = stage.get("outs", []) + stage.get("metrics", [])
        declared[name] = [resolve(next(iter(e)) if isinstance(e, dict) else e) for e in entries]
    return declared


def test_repro_builds_every_declared_output(built_repo: PipelineRepo) -> None:
    lock = built_repo.lock()
    assert set(lock["stages"]) == set(STAGES)
    assert _ran(built_repo.build_log) == set(STAGES)
    for stage, paths in _declared_outputs(built_repo).items():
        for rel in paths:
            path = built_repo.root / rel
            assert path.exists(), f"{stage}: declared output {rel} was not written"
            if path.is_dir():
                assert any(path.iterdir()), f"{stage}: declared output dir {rel} is empty"
    print(f"\nfull dvc repro at the tiny profile: {built_repo.build_seconds:.1f} s")


def test_repro_writes_nothing_undeclared(built_repo: PipelineRepo) -> None:
    """Every file a stage writes outside .dvc/ must belong to a declared output (else DVC neither tracks nor
    cleans it, and a stale copy can survive a rerun) or be DVC's own bookkeeping (dvc.lock, .gitignore)."""
    declared = [p for paths in _declared_outputs(built_repo).values() for p in paths]
    stray = [f for f in built_repo.written_files
             if f != "dvc.lock" and Path(f).name != ".gitignore"
             and not any(f == d or f.startswith(d.rstrip("/") + "/") for d in declared)]
    assert not stray, f"files written by `dvc repro` that no stage declares: {stray}"


def test_status_clean_and_second_repro_is_a_noop(work_repo: PipelineRepo) -> None:
    # The train, evaluate and carla_eval stages read the LMDB cache; that must not change its hash.
    assert work_repo.status() == {}
    watched = {rel: work_repo.mtimes(rel) for rel in ("data/nuplan_mini", "data/cache", "checkpoints", "reports")}
    lock_before = (work_repo.root / "dvc.lock").read_text()
    proc = work_repo.dvc("repro")
    assert _ran(proc.stdout) == set(), proc.stdout
    assert {rel: work_repo.mtimes(rel) for rel in watched} == watched
    assert (work_repo.root / "dvc.lock").read_text() == lock_before
    assert work_repo.status() == {}


def test_loss_weight_change_retrains_without_preprocessing(work_repo: PipelineRepo) -> None:
    cache_mtimes = work_repo.mtimes("data/cache")
    cache_md5 = work_repo.out_hash("preprocess", "data/cache")
    work_repo.set_param("loss.det_weight", 2.5)

    # `dvc status` lists the stages whose own deps changed; evaluate and carla_eval are stale through train.
    status = work_repo.status()
    assert status == {"train": [{"changed deps": {"params.yaml": {"loss": "modified"}}}]}, status

    proc = work_repo.dvc("repro")
    assert _ran(proc.stdout) == {"train", "evaluate", "carla_eval"}, proc.stdout
    assert work_repo.mtimes("data/cache") == cache_mtimes
    assert work_repo.out_hash("preprocess", "data/cache") == cache_md5
    assert work_repo.status() == {}

    # Persisted checkpoints from the det_weight=1.0 run must not survive into the new run's output.
    for cfg_file in (work_repo.root / "checkpoints" / "default").glob("step_*/resolved_config.json"):
        assert json.loads(cfg_file.read_text())["loss"]["det_weight"] == 2.5, f"stale checkpoint {cfg_file.parent}"

    diff = json.loads(work_repo.dvc("metrics", "diff", "--json").stdout or "{}")
    changed = {path for path, metrics in diff.items() if metrics}
    assert "reports/train/summary.json" in changed, diff
    work_repo.commit("loss.det_weight 2.5")


def test_preprocess_param_change_reruns_preprocess(work_repo: PipelineRepo) -> None:
    stride = work_repo.params()["preprocess"]["window_stride"]
    cache_md5 = work_repo.out_hash("preprocess", "data/cache")
    work_repo.set_param("preprocess.window_stride", stride + 1)

    assert work_repo.stale_stages() == {"preprocess", "train", "evaluate", "carla_eval"}
    proc = work_repo.dvc("repro", "preprocess")
    assert _ran(proc.stdout) == {"preprocess"}, proc.stdout
    assert work_repo.out_hash("preprocess", "data/cache") != cache_md5
    assert work_repo.status("preprocess") == {}

    # Back to the committed params: the run-cache restores the old cache without running preprocess.
    work_repo.git("checkout", "--", "params.yaml")
    proc = work_repo.dvc("repro", "preprocess")
    assert _ran(proc.stdout) == set(), proc.stdout
    assert work_repo.out_hash("preprocess", "data/cache") == cache_md5
    assert work_repo.status() == {}
    work_repo.git("checkout", "--", "dvc.lock")


def _find_values(node: Any, key: str) -> list[Any]:
    """All values stored under `key` anywhere in a nested JSON document."""
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                found.append(v)
            found.extend(_find_values(v, key))
    elif isinstance(node, list):
        for v in node:
            found.extend(_find_values(v, key))
    return found


def test_exp_run_retrains_only(work_repo: PipelineRepo) -> None:
    assert work_repo.status() == {}
    cache_mtimes = work_repo.mtimes("data/cache")
    proc = work_repo.dvc("exp", "run", "-S", "loss.det_weight=2.0")
    assert _ran(proc.stdout) == {"train", "evaluate", "carla_eval"}, proc.stdout
    assert work_repo.mtimes("data/cache") == cache_mtimes
    assert work_repo.params()["loss"]["det_weight"] == 2.0

    shown = json.loads(work_repo.dvc("exp", "show", "--json").stdout)
    losses = _find_values(shown, "loss")
    assert {entry.get("det_weight") for entry in losses if isinstance(entry, dict)} >= {2.0, 2.5}
    for metrics_file in ("reports/train/summary.json", "reports/evaluate/metrics.json",
                         "reports/carla_eval/metrics.json"):
        assert _find_values(shown, metrics_file), f"exp show lists no metrics from {metrics_file}"


def test_plots_show_renders(work_repo: PipelineRepo, tmp_path: Path) -> None:
    out = tmp_path / "plots"
    proc = work_repo.dvc("plots", "show", "-o", str(out))
    assert (out / "index.html").is_file()
    assert "failed" not in proc.stderr.lower() and "not found" not in proc.stderr.lower(), proc.stderr
    spec = yaml.safe_load((work_repo.root / "dvc.yaml").read_text())
    for entry in spec["plots"]:
        target = next(iter(entry)) if isinstance(entry, dict) else entry
        assert (work_repo.root / target).exists(), f"plot source {target} is missing"
