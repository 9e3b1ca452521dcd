"""`drivepipe download`: the first DVC stage (synthetic world or real nuPlan-mini)."""

from __future__ import annotations

import argparse
from pathlib import Path

from drivepipe.cli._common import add_params_argument, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_argument(parser)
    parser.add_argument("--out", default=None, help="dataset root (default: data.root from params)")
    parser.add_argument("--report", default="reports/download.json", help="generation/verification report")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    from drivepipe.data_source import run_download

    report = run_download(cfg, Path(args.out or cfg.data.root), Path(args.report))
    problems = report["verification"].get("problems", [])
    print(f"download: {report['num_files']} files, dataset hash {report['dataset_hash'][:12]}, "
          f"{len(problems)} problems, {report['seconds']} s")
    return 0


if __name__ == "__main__":
    import sys

    from drivepipe.cli._common import stage_main

    sys.exit(stage_main(add_arguments, run, __doc__))
