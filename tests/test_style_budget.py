"""House-style budgets (style.md P12), checked on every run: file <= 600 lines, function <= 120 lines (hard
limits), and most functions short (p90 <= 50 lines)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src" / "drivepipe"


def _functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    return [(f"{path.name}:{n.name}", n.end_lineno - n.lineno + 1) for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_files_and_functions_stay_within_budget():
    files = sorted(SRC.rglob("*.py"))
    too_long = [f"{p.relative_to(SRC)}: {n}" for p in files if (n := len(p.read_text().splitlines())) > 600]
    assert not too_long, f"files over 600 lines: {too_long}"
    funcs = [f for p in files for f in _functions(p)]
    giant = [f"{name}: {n}" for name, n in funcs if n > 120]
    assert not giant, f"functions over 120 lines: {giant}"
    assert np.percentile([n for _, n in funcs], 90) <= 50
