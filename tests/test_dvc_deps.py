"""Every project module a DVC stage can import is covered by that stage's `deps` in dvc.yaml.

Imports are followed statically and transitively (including the function-level imports that keep start-up
light), from the stage's CLI module. A module missing from deps would let DVC wrongly skip the stage.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
STAGE_CLI = {"download": "download", "preprocess": "preprocess", "train": "train", "evaluate": "evaluate",
             "carla_eval": "carla_eval"}


def _module_file(name: str) -> Path | None:
    base = SRC / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, package: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("drivepipe")}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(parts + ([mod] if mod else []))
            if mod.startswith("drivepipe"):
                found.add(mod)
                found |= {f"{mod}.{a.name}" for a in node.names}  # `from pkg import module`
    return found


def _closure(start: str) -> set[Path]:
    seen: set[Path] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if path is None or path in seen:
            continue
        seen.add(path)
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        todo.extend(_imports(path, pkg))
        parts = name.split(".")  # importing a.b.c runs a/__init__ and a/b/__init__
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
    return seen


@pytest.mark.parametrize("stage", list(STAGE_CLI))
def test_stage_deps_cover_every_imported_module(stage):
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    deps = [REPO / d for d in spec["deps"]]
    files = _closure(f"drivepipe.cli.{STAGE_CLI[stage]}")
    assert _module_file(f"drivepipe.cli.{STAGE_CLI[stage]}") in files
    missing = sorted(str(f.relative_to(REPO)) for f in files
                     if f.name != "__init__.py" or f.parent != SRC / "drivepipe"
                     if not any(f == d or d in f.parents for d in deps))
    missing = [m for m in missing if m != "src/drivepipe/__init__.py"]
    assert not missing, f"stage {stage} imports modules missing from its dvc.yaml deps: {missing}"


def test_preprocess_does_not_depend_on_training_code():
    files = _closure("drivepipe.cli.preprocess")
    for forbidden in ("model", "train", "losses.py", "sim", "evaluate"):
        assert not any(forbidden in f.relative_to(SRC / "drivepipe").parts[:1] or f.name == forbidden
                       for f in files), forbidden


def test_preprocess_workers_do_not_import_torch():
    """Spawned preprocess workers import the stage's modules; torch would add seconds of start-up to each."""
    import subprocess
    import sys

    code = ("import sys, drivepipe.cli.preprocess, drivepipe.preprocess.run, drivepipe.cache.lmdb_store; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(SRC)}).returncode == 0


def test_bytecode_is_not_part_of_any_source_dep():
    """`src/...` directory deps are hashed by DVC; __pycache__ files differ between machines (and exist on some only),
    so they must be ignored or every clone would see every stage as changed."""
    import shutil
    import subprocess
    import sys

    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    for path in ("src/drivepipe/__pycache__/config.cpython-311.pyc", "src/drivepipe/nuplan/__pycache__/x.pyc"):
        done = subprocess.run([dvc, "check-ignore", "-q", path], cwd=REPO, capture_output=True)
        assert done.returncode == 0, f"{path} is not ignored by .dvcignore"
    done = subprocess.run([dvc, "check-ignore", "-q", "src/drivepipe/config.py"], cwd=REPO, capture_output=True)
    assert done.returncode == 1  # sources still count
