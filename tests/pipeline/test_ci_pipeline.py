"""The users' CI job (ci/pipeline.sh, called by .github/workflows/pipeline.yml) on the tiny profile with a local DVC
remote: main pushes the cache; an unchanged PR recomputes nothing; a param-only change reruns only the stages
downstream of it and the summary shows the change; a code change in preprocess/ reruns preprocess and what follows.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from pipeline_repo import PROJECT, PipelineRepo, _env

pytestmark = pytest.mark.slow


def _ci(repo: PipelineRepo, out: Path, base: str, remote: Path, push: bool = False) -> tuple[set[str], str]:
    """Run the CI script in `repo` -> (stages it reproduced, the Markdown summary)."""
    env = {**_env(repo.root), "DVC_REMOTE_URL": str(remote), "CI_BASE_REF": base, "CI_PUSH": "1" if push else "0",
           "CI_OUT": str(out)}
    env.pop("GITHUB_STEP_SUMMARY", None)
    proc = subprocess.run(["bash", "ci/pipeline.sh"], cwd=repo.root, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    return set((out / "stages_run.txt").read_text().split()), (out / "summary.md").read_text()


@pytest.fixture(scope="module")
def main_branch(work_repo: PipelineRepo, tmp_path_factory: pytest.TempPathFactory) -> tuple[PipelineRepo, Path]:
    """The built pipeline with the CI script committed, after the CI job of a push to main (which pushes)."""
    (work_repo.root / "ci").mkdir(exist_ok=True)
    shutil.copy2(PROJECT / "ci" / "pipeline.sh", work_repo.root / "ci" / "pipeline.sh")
    work_repo.commit("CI script")
    remote = tmp_path_factory.mktemp("ci_remote") / "storage"
    stages, summary = _ci(work_repo, tmp_path_factory.mktemp("ci_main"), "HEAD~1", remote, push=True)
    assert stages == set() and "Reproduced: nothing" in summary
    assert any((remote / "files" / "md5").iterdir()), "main did not push the DVC cache"
    return work_repo, remote


@pytest.fixture(scope="module")
def pull_request(main_branch: tuple[PipelineRepo, Path], tmp_path_factory: pytest.TempPathFactory) -> PipelineRepo:
    """A fresh clone of main (no DVC cache, no data) on a PR branch; the tests below add commits in file order."""
    main, _ = main_branch
    dest = tmp_path_factory.mktemp("ci_pr") / "pr"
    main.git("clone", "-q", str(main.root), str(dest))
    pr = PipelineRepo(dest)
    pr.git("checkout", "-q", "-b", "pr")
    return pr


def _stages_depending_on(repo: PipelineRepo, dep: str) -> set[str]:
    spec = yaml.safe_load((repo.root / "dvc.yaml").read_text())
    return {name for name, st in spec["stages"].items() if any(d == dep or dep.startswith(d + "/")
                                                              for d in st.get("deps", []))}


def test_unchanged_pr_recomputes_nothing(main_branch: tuple[PipelineRepo, Path], pull_request: PipelineRepo,
                                         tmp_path: Path) -> None:
    _, remote = main_branch
    pr = pull_request
    lock = (pr.root / "dvc.lock").read_text()
    stages, summary = _ci(pr, tmp_path / "out", "origin/main", remote)
    assert stages == set(), summary
    assert "Reproduced: nothing" in summary and (pr.root / "dvc.lock").read_text() == lock
    assert summary.count("\nnone\n") == 2, summary  # no param and no metric changed
    assert (tmp_path / "out" / "plots" / "index.html").is_file()


def test_param_change_reruns_only_downstream_and_shows_the_diff(main_branch: tuple[PipelineRepo, Path],
                                                                pull_request: PipelineRepo, tmp_path: Path) -> None:
    _, remote = main_branch
    pr = pull_request
    before = pr.params()["carla_eval"]["target_speed_mps"]
    pr.set_param("carla_eval.target_speed_mps", before / 2)
    pr.commit("slower closed-loop target speed")
    stages, summary = _ci(pr, tmp_path / "out", "origin/main", remote)
    assert stages == {"carla_eval"}, summary
    assert "carla_eval.target_speed_mps" in summary
    assert "reports/carla_eval/metrics.json" in summary, "the metric change is not in the summary"
    assert (tmp_path / "out" / "plots" / "index.html").is_file()


def test_preprocess_code_change_reruns_preprocess_and_what_follows(main_branch: tuple[PipelineRepo, Path],
                                                                   pull_request: PipelineRepo, tmp_path: Path) -> None:
    """Every stage that runs preprocess code reruns, and nothing upstream; a stage that only reads the cache would
    rerun too if the cache bytes changed, but this change leaves them identical, so DVC may rightly keep it."""
    _, remote = main_branch
    pr = pull_request
    cache_md5 = pr.out_hash("preprocess", "data/cache")
    code = pr.root / "src" / "drivepipe" / "preprocess" / "windows.py"
    code.write_text(code.read_text() + "\n# a code change in preprocess/\n")
    pr.commit("touch preprocess code")
    stages, summary = _ci(pr, tmp_path / "out", "origin/main", remote)
    direct = _stages_depending_on(pr, "src/drivepipe/preprocess/windows.py")
    assert "preprocess" in direct and "download" not in direct
    assert direct <= stages <= {"preprocess", "train", "evaluate", "carla_eval"}, summary
    assert pr.out_hash("preprocess", "data/cache") == cache_md5
