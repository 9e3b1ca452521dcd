"""`drivepipe compare A B`: headline metrics of two runs side by side with 95 % intervals, and per metric whether
the difference is outside the noise (non-overlapping intervals). A and B: git revisions, DVC experiment names,
`workspace`, or metrics.json paths."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", help="first run: git rev, DVC experiment name, 'workspace' or a metrics.json path")
    parser.add_argument("b", help="second run (the difference printed is b - a)")
    parser.add_argument("--metrics", default="reports/evaluate/metrics.json",
                        help="metrics file inside each revision (default: reports/evaluate/metrics.json)")
    parser.add_argument("--repo", default=".", help="git repository (default: the current directory)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from drivepipe.evaluate.compare import RULE, compare, format_table, load_metrics

    repo = Path(args.repo)
    try:
        rows = compare(load_metrics(args.a, args.metrics, repo), load_metrics(args.b, args.metrics, repo))
    except (ValueError, OSError) as exc:
        print(f"drivepipe compare: {exc}")
        return 2
    print(json.dumps({"rule": RULE, "rows": rows}, indent=2) if args.json else format_table(rows, args.a, args.b))
    return 0
