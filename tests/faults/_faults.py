"""Helpers of the fault tests: run a `drivepipe` command the way a user does and read back its one-line error."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import yaml

SRC = Path(__file__).resolve().parents[2] / "src"


def write_params(path: Path, params: dict) -> Path:
    """A complete params.yaml (every section, as `drivepipe use-profile` writes it)."""
    path.write_text(yaml.safe_dump(params, sort_keys=False, default_flow_style=False))
    return path


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m drivepipe.cli.main ...` in a subprocess: a SIGBUS or a MemoryError cannot take pytest down."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run([sys.executable, "-m", "drivepipe.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def error_line(stderr: str) -> str:
    """The one `drivepipe: ...` line; fails when the command printed a traceback or several error lines."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("drivepipe: ")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under root (to assert that a failed run lost or changed nothing)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
