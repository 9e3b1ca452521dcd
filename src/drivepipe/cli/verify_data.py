"""`drivepipe verify-data`: validate a nuPlan-format dataset folder (real or synthetic).

Exit status: 0 when no problem was found, 1 otherwise (2 for a bad command line, via the dispatcher).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

DEFAULT_ROOT = "data/nuplan_mini"  # = params.yaml data.root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=None,
                        help=f"dataset root (default: $NUPLAN_DATA_ROOT if set, else {DEFAULT_ROOT})")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    parser.add_argument("--no-decode", action="store_true",
                        help="only check that sensor files exist (fast on large real datasets)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="instead, check every value of an LMDB cache (CRC-32s and the header's content hash)")


def run(args: argparse.Namespace) -> int:
    from drivepipe.nuplan.verify import verify_dataset

    if args.cache is not None:
        from drivepipe.cache.lmdb_store import LmdbReader

        print(f"{args.cache}: {LmdbReader(args.cache).verify()} values OK, content hash matches the header")
        return 0
    root = args.root
    if root is None and not os.environ.get("NUPLAN_DATA_ROOT"):
        root = Path(DEFAULT_ROOT)
    report = verify_dataset(root, decode=not args.no_decode)
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print(_summary(report))
    return 1 if report["problems"] else 0


def _summary(report: dict) -> str:
    lines = [
        f"dataset root: {report.get('root') or '$NUPLAN_DATA_ROOT'}",
        f"logs {report['logs']}, scenes {report['scenes']}, lidar sweeps {report['lidar_sweeps']} "
        f"({report['lidar_unreleased']} without a released point cloud), "
        f"duration {report['duration_s']:.1f} s, locations {', '.join(report['locations']) or '-'}",
        "images: " + (", ".join(f"{k} {v}" for k, v in report["images"].items()) or "-"),
        "boxes: " + (", ".join(f"{k} {v}" for k, v in report["boxes"].items()) or "-"),
    ]
    lines += [f"warning: {w}" for w in report["warnings"]]
    if report["problems"]:
        lines.append(f"{report['num_problems']} problem(s):")
        lines += [f"  {p['file']}: {p['problem']}" for p in report["problems"]]
    else:
        lines.append("OK: no problems found")
    return "\n".join(lines)
