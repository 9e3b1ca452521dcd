"""`drivepipe show-sample`: write a PNG of one cached sample (cameras with GT boxes + BEV layers)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache", default="data/cache", help="LMDB cache directory")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--index", type=int, default=0, help="position in the cache's sorted key list")
    which.add_argument("--key", default=None, help="sample key <log_name>/<token>")
    parser.add_argument("--out", required=True, help="PNG to write")


def run(args: argparse.Namespace) -> int:
    from drivepipe.cache.lmdb_store import LmdbReader
    from drivepipe.errors import DataError
    from drivepipe.preprocess.show import render_sample

    reader = LmdbReader(Path(args.cache))  # no params check: any cache can be looked at
    keys = reader.keys()
    key = args.key if args.key is not None else (keys[args.index] if -len(keys) <= args.index < len(keys) else None)
    if key is None or key not in set(keys):
        raise DataError(args.cache, f"no sample {args.key if args.key is not None else args.index} "
                                    f"(the cache has {len(keys)})")
    sample, meta = reader.get(key)
    title = f"{key}  {meta.get('location', '')}  {meta.get('scenario_type', '')}  split={meta.get('split', '')}"
    out = render_sample(sample, reader.header, args.out, title)
    print(f"show-sample: {key} -> {out}")
    return 0


if __name__ == "__main__":
    import sys

    from drivepipe.cli._common import stage_main

    sys.exit(stage_main(add_arguments, run, __doc__))
