"""`drivepipe preprocess`: dataset -> windows -> `build_sample` -> LMDB cache (DVC stage `preprocess`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from drivepipe.cli._common import add_engine_arguments, add_params_argument, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_argument(parser)
    parser.add_argument("--data", default="data/nuplan_mini", help="dataset root")
    parser.add_argument("--out", default="data/cache", help="LMDB cache directory to (re)create")
    parser.add_argument("--report", default="reports/preprocess.json", help="report JSON path")
    add_engine_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from drivepipe.engine import engine_from_env
    from drivepipe.errors import DataError
    from drivepipe.preprocess.run import run_preprocess, skip_summary

    cfg = load_config(args)
    engine = engine_from_env(args.engine, args.ray_address)
    report = run_preprocess(cfg, Path(args.data), Path(args.out), Path(args.report), engine)
    print(skip_summary(report))
    print(f"preprocess: {report['samples']} samples {report['per_split']}, {report['skipped_total']} skipped, "
          f"{report['samples_per_s']} samples/s -> {args.out}")
    if report["samples"] == 0:
        raise DataError(args.data, f"no samples were produced (skipped: {report['skipped']}); see {args.report}")
    return 0


if __name__ == "__main__":
    import sys

    from drivepipe.cli._common import stage_main

    sys.exit(stage_main(add_arguments, run, __doc__))
