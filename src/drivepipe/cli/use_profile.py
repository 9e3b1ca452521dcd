"""`drivepipe use-profile NAME`: rewrite params.yaml with a named profile (cpu | gpu-nuplan)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from drivepipe.profiles import PROFILES

    parser.add_argument("name", choices=sorted(PROFILES), help="profile to write")
    parser.add_argument("--params", default="params.yaml", help="params file to rewrite (default: params.yaml)")


def run(args: argparse.Namespace) -> int:
    from drivepipe.profiles import write_profile

    cfg = write_profile(args.name, Path(args.params))
    print(f"{args.params}: profile {args.name} (data.source={cfg.data.source}, images "
          f"{cfg.preprocess.image_width}x{cfg.preprocess.image_height}, BEV {cfg.preprocess.bev_size}, "
          f"batch {cfg.train.batch_size}, amp {cfg.train.amp}); run `dvc status` to see what it invalidates")
    return 0
