"""One undisturbed tiny-profile pipeline per test session; the test modules work on copies of it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pipeline_repo import PipelineRepo, make_repo


@pytest.fixture(scope="session")
def built_repo(tmp_path_factory: pytest.TempPathFactory) -> PipelineRepo:
    """`dvc repro` of all five stages at the tiny profile, then everything committed (dvc.lock, metrics, plots).

    Treat it as read-only: it is the reference that the other modules compare against. Copy it to change it.
    """
    repo = make_repo(tmp_path_factory.mktemp("pipeline") / "reference")
    start = time.monotonic()
    proc = repo.dvc("repro", timeout=900)
    repo.build_seconds = time.monotonic() - start  # type: ignore[attr-defined]
    repo.build_log = proc.stdout + proc.stderr  # type: ignore[attr-defined]
    changed = repo.git("status", "--porcelain", "--untracked-files=all").stdout.splitlines()
    repo.written_files = [line[3:] for line in changed]  # type: ignore[attr-defined]
    repo.commit("dvc repro at the tiny profile")
    return repo


@pytest.fixture(scope="module")
def work_repo(built_repo: PipelineRepo, tmp_path_factory: pytest.TempPathFactory,
              request: pytest.FixtureRequest) -> PipelineRepo:
    """A private copy of the built pipeline for one test module (tests in a module run in file order)."""
    name = Path(request.module.__file__).stem
    return built_repo.copy(tmp_path_factory.mktemp(name) / "repo")
