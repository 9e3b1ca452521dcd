"""Compare the headline metrics of two runs (git revisions, DVC experiments or metrics files) with their intervals.

A run is named by a metrics file path, `workspace` (the file in the working tree), a git revision (`HEAD~1`, a
branch, a tag, a commit) or a DVC experiment name (its `refs/exps/.../<name>` ref); the metrics file is read with
`git show <rev>:<path>`.

Rule (stated in the output): a difference is called *outside the noise* when the two 95 % scene-bootstrap
intervals do not overlap. That is conservative (two equal-width non-overlapping 95 % intervals correspond to
p < ~0.006 for a difference of independent estimates) and it covers the test-set sampling noise only: two training
seeds of the same config also differ (bench/seeds.py measures that), so a real improvement must also exceed the
seed-to-seed spread.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

RULE = ("outside the noise = the two 95 % bootstrap intervals (over scenes for evaluate, over scenarios for "
        "carla_eval) do not overlap (test-set noise only; compare with the seed-to-seed spread of bench/seeds.py too)")


def _git(args: list[str], cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def resolve_rev(name: str, repo: Path) -> str:
    """A git revision for `name`: itself when git knows it, else the DVC experiment ref ending in /<name>."""
    try:
        return _git(["rev-parse", "--verify", "--quiet", f"{name}^{{commit}}"], repo).strip()
    except subprocess.CalledProcessError:
        pass
    refs = _git(["for-each-ref", "--format=%(refname)", "refs/exps"], repo).split()
    found = [r for r in refs if r.rsplit("/", 1)[-1] == name]
    if len(found) != 1:
        raise ValueError(f"{name}: not a file, git revision or (unique) DVC experiment name in {repo}")
    return found[0]


def load_metrics(run: str, metrics_path: str, repo: Path) -> dict[str, Any]:
    """The metrics dict of one run (see the module docstring for the accepted names)."""
    if run == "workspace":
        return json.loads((repo / metrics_path).read_text())
    if Path(run).is_file():
        return json.loads(Path(run).read_text())
    rev = resolve_rev(run, repo)
    try:
        return json.loads(_git(["show", f"{rev}:{metrics_path}"], repo))
    except subprocess.CalledProcessError as exc:
        raise ValueError(f"{run}: no {metrics_path} in that revision") from exc


def headline(metrics: dict[str, Any], prefix: str = "") -> dict[str, tuple[float | None, list[float] | None]]:
    """dotted name -> (value, interval) for every metric with an interval: a `<name>_ci95` sibling (evaluate's
    metrics.json) or an entry `<name>` in a sibling `ci95` dict (carla_eval's, per agent and mode)."""
    out: dict[str, tuple[float | None, list[float] | None]] = {}
    intervals = metrics.get("ci95") if isinstance(metrics.get("ci95"), dict) else {}
    for key, value in metrics.items():
        if key == "ci95" and intervals:
            continue
        if isinstance(value, dict):
            out.update(headline(value, f"{prefix}{key}."))
        elif f"{key}_ci95" in metrics:
            out[f"{prefix}{key}"] = (value, metrics[f"{key}_ci95"])
        elif key in intervals:
            out[f"{prefix}{key}"] = (value, intervals[key])
    return out


def verdict(a: tuple[float | None, list[float] | None], b: tuple[float | None, list[float] | None]) -> str:
    """'outside noise' | 'within noise' | 'no interval' (see RULE)."""
    if a[0] is None or b[0] is None or not a[1] or not b[1]:
        return "no interval"
    return "outside noise" if a[1][1] < b[1][0] or b[1][1] < a[1][0] else "within noise"


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per headline metric present in either run: values, intervals, difference b - a, verdict."""
    ha, hb = headline(a), headline(b)
    rows = []
    for name in [*ha, *(k for k in hb if k not in ha)]:
        va, vb = ha.get(name, (None, None)), hb.get(name, (None, None))
        diff = vb[0] - va[0] if va[0] is not None and vb[0] is not None else None
        rows.append({"metric": name, "a": va[0], "a_ci95": va[1], "b": vb[0], "b_ci95": vb[1], "diff": diff,
                     "verdict": verdict(va, vb)})
    return rows


def format_table(rows: list[dict[str, Any]], name_a: str, name_b: str) -> str:
    def cell(v: float | None, ci: list[float] | None) -> str:
        if v is None:
            return "-"
        return f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    width = max([len(r["metric"]) for r in rows] + [6])
    lines = [f"{'metric':<{width}}  {name_a:>24}  {name_b:>24}  {'b - a':>8}  verdict"]
    for r in rows:
        diff = "-" if r["diff"] is None else f"{r['diff']:+.3f}"
        lines.append(f"{r['metric']:<{width}}  {cell(r['a'], r['a_ci95']):>24}  {cell(r['b'], r['b_ci95']):>24}  "
                     f"{diff:>8}  {r['verdict']}")
    return "\n".join([*lines, "", f"rule: {RULE}"])
