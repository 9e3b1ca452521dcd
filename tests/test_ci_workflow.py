"""The users' CI files are valid: YAML parses, the job calls the script that exists, installs with the README's
command, reproduces with `dvc repro --pull --allow-missing` (in the script), uploads the plots and pushes on main."""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPT = "ci/pipeline.sh"


def _readme_install() -> str:
    """The install part of the README's first command (`... && pip install -r requirements.txt -e .`)."""
    first = re.search(r"```bash\n#[^\n]*\n([^\n]+)", (REPO / "README.md").read_text()).group(1)
    return first.split(" && dvc repro")[0].strip()


def test_github_workflow_is_valid_and_calls_the_script() -> None:
    wf = yaml.safe_load((REPO / ".github" / "workflows" / "pipeline.yml").read_text())
    triggers = wf[True] if True in wf else wf["on"]  # YAML 1.1 reads the key `on` as true
    assert "pull_request" in triggers and triggers["push"]["branches"] == ["main"]
    steps = wf["jobs"]["pipeline"]["steps"]
    runs = [s.get("run", "") for s in steps]
    assert any(_readme_install() in r for r in runs), f"no step installs with {_readme_install()!r}"
    job = next(s for s in steps if SCRIPT in s.get("run", ""))
    assert {"DVC_REMOTE_URL", "CI_BASE_REF", "CI_PUSH"} <= set(job["env"])
    assert "secrets.DVC_REMOTE_URL" in job["env"]["DVC_REMOTE_URL"] and "main" in job["env"]["CI_PUSH"]
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert "ci-out/plots" in upload["with"]["path"]
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0  # the base revision's metrics come from Git


def test_script_exists_and_does_the_work() -> None:
    script = REPO / SCRIPT
    assert script.is_file() and os.access(script, os.X_OK)
    text = script.read_text()
    for needle in ("dvc repro --pull --allow-missing", 'dvc metrics diff "$BASE" --md', 'dvc plots diff "$BASE"',
                   "dvc push", "GITHUB_STEP_SUMMARY", "HOOK: significance"):
        assert needle in text, needle


def test_gitlab_job_is_valid_and_calls_the_script() -> None:
    job = yaml.safe_load((REPO / ".gitlab-ci.yml").read_text())["pipeline"]
    assert job["script"][0] == _readme_install()
    assert any(SCRIPT in line for line in job["script"]) and "ci-out/" in job["artifacts"]["paths"]
