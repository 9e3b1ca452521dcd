"""`drivepipe merge-shards`: merge caches built with preprocess.shard_index = 0..K-1 into one cache."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shards", nargs="+", help="shard cache directories")
    parser.add_argument("--out", default="data/cache", help="merged cache directory to (re)create")


def run(args: argparse.Namespace) -> int:
    from drivepipe.preprocess.run import merge_shards

    summary = merge_shards([Path(s) for s in args.shards], Path(args.out))
    print(f"merge-shards: {summary['samples']} samples from {summary['shards']} shards -> {summary['cache_dir']}")
    return 0


if __name__ == "__main__":
    import sys

    from drivepipe.cli._common import stage_main

    sys.exit(stage_main(add_arguments, run, __doc__))
