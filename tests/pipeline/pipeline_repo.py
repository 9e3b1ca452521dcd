"""A throwaway Git + DVC checkout of this project, driven through the `dvc` CLI like a user or CI would.

`make_repo(dest)` copies the pipeline (src/, dvc.yaml, DVC and Git config) with `tiny_params.yaml` as its
params.yaml, then `git init` + first commit (DVCLive and `dvc exp` need a commit). Every command runs with the
venv's bin first on PATH (the stages call `python -m drivepipe.cli.<stage>`) and PYTHONPATH=<repo>/src, so the
stage code that runs is the copy that DVC hashes, not the editable install under /work/main/src.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PROJECT = Path(__file__).resolve().parents[2]
TINY_PARAMS = Path(__file__).with_name("tiny_params.yaml")
VENV_BIN = Path(sys.executable).parent
STAGES = ("download", "preprocess", "train", "evaluate", "carla_eval")
_COPIED = (".dvcignore", ".gitignore", "dvc.yaml", ".dvc/config", ".dvc/.gitignore", "data/.gitkeep",
           "checkpoints/.gitkeep")


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DVCLIVE_TEST", None)  # the repo is committed, so dvclive runs as in real use
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(root / "src"),
               DVC_NO_ANALYTICS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", GIT_TERMINAL_PROMPT="0")
    return env


def md5_file(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@dataclass
class PipelineRepo:
    """One temp checkout; all paths are relative to `root`."""

    root: Path

    # ------------------------------------------------------------------------------------------- commands
    def run(self, *cmd: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(cmd), check=False, cwd=self.root, env=_env(self.root), capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}) in {self.root}\n"
                                 f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}")
        return proc

    def dvc(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        return self.run(str(VENV_BIN / "dvc"), *args, check=check, timeout=timeout)

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("git", *args, check=check)

    def spawn_dvc(self, *args: str, log: Path) -> subprocess.Popen:
        """Start `dvc ...` in its own process group (so the whole tree can be SIGKILLed), output to `log`."""
        with open(log, "wb") as fh:
            return subprocess.Popen([str(VENV_BIN / "dvc"), *args], cwd=self.root, env=_env(self.root),
                                    stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)

    def commit(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)

    # ------------------------------------------------------------------------------------------- state
    def status(self, *targets: str) -> dict[str, Any]:
        """`dvc status --json`: {} when every stage is up to date, else {stage: [changes]}."""
        out = self.dvc("status", "--json", *targets).stdout.strip()
        return json.loads(out or "{}")

    def stale_stages(self) -> set[str]:
        return {name.split(":")[-1] for name in self.status()}

    def lock(self) -> dict[str, Any]:
        return yaml.safe_load((self.root / "dvc.lock").read_text())

    def out_hash(self, stage: str, path: str) -> str:
        """The md5 recorded in dvc.lock for one output of one stage."""
        for out in self.lock()["stages"][stage]["outs"]:
            if out["path"] == path:
                return out["md5"]
        raise KeyError(f"{stage}: no out {path} in dvc.lock")

    def params(self) -> dict[str, Any]:
        return yaml.safe_load((self.root / "params.yaml").read_text())

    def set_param(self, dotted: str, value: Any) -> None:
        """Edit params.yaml in place (block style, as `dvc exp run -S` writes it)."""
        data = self.params()
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[leaf] = value
        (self.root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))

    def mtimes(self, rel: str) -> dict[str, int]:
        """mtime_ns of every file under `rel` (or of `rel` itself), keyed by relative path."""
        base = self.root / rel
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        return {str(p.relative_to(self.root)): p.stat().st_mtime_ns for p in files}

    def copy(self, dest: Path) -> PipelineRepo:
        """A full copy (workspace, Git history, DVC cache): cheaper than building the pipeline again."""
        shutil.copytree(self.root, dest, symlinks=True)
        shutil.rmtree(dest / ".dvc" / "tmp", ignore_errors=True)  # state db / locks belong to the original
        return PipelineRepo(dest)


def make_repo(dest: Path, params: Path = TINY_PARAMS) -> PipelineRepo:
    """Copy the pipeline into `dest` (tiny params), `git init` and make the first commit."""
    dest.mkdir(parents=True, exist_ok=True)
    src = Path(os.environ.get("PIPELINE_TESTS_SRC", PROJECT / "src"))  # another checkout's src/, for debugging
    shutil.copytree(src, dest / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    for rel in _COPIED:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if (PROJECT / rel).exists():
            shutil.copy2(PROJECT / rel, target)
        else:
            target.touch()
    shutil.copy2(params, dest / "params.yaml")
    repo = PipelineRepo(dest)
    repo.git("init", "-q", "-b", "main")
    repo.git("config", "user.email", "pipeline-tests@example.invalid")
    repo.git("config", "user.name", "pipeline tests")
    repo.git("config", "commit.gpgsign", "false")
    if not (dest / ".dvc" / "config").exists():
        repo.dvc("init", "-q")
    repo.commit("pipeline at the tiny profile")
    return repo


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of `proc` (dvc and the stage it runs), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, poll: float = 0.05) -> None:
    """Poll until `predicate()` is true; fail if `proc` exits first or the timeout passes."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before: {what}")
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for: {what}")


def stage_running(stage: str, pgid: int) -> bool:
    """Whether `python -m drivepipe.cli.<stage>` runs in process group `pgid` (read from /proc, Linux only).

    Only our own group counts: other people's test runs on the same machine may run the same stage.
    """
    needle = f"drivepipe.cli.{stage}".encode()
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            stat = (proc_dir / "stat").read_text()
            group = int(stat.rsplit(")", 1)[1].split()[2])
            if group == pgid and needle in (proc_dir / "cmdline").read_bytes():
                return True
        except (OSError, ValueError, IndexError):
            continue
    return False
