"""Helpers shared by the stage entry points: params loading, resolved-config dump, one-line errors."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from drivepipe.config import Config, ConfigError, load, to_dict
from drivepipe.errors import BackendUnavailable, DataError, EngineError
from drivepipe.utils.io import atomic_write_json


def add_params_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the work runs; deliberately not a param (switching engines must not rerun a DVC stage). Read with
    `drivepipe.engine.engine_from_env(args.engine, args.ray_address)`."""
    parser.add_argument("--engine", choices=("local", "ray"), default=None,
                        help="execution engine (default: env DRIVEPIPE_ENGINE, else local)")
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster: auto, host:port or ray://host:10001 (default: env RAY_ADDRESS, else a "
                             "new local Ray)")


def load_config(args: argparse.Namespace) -> Config:
    return load(args.params)


def write_resolved_config(cfg: Config, out_dir: str | Path) -> None:
    """Every stage writes the config it ran with next to its outputs."""
    atomic_write_json(Path(out_dir) / "resolved_config.json", to_dict(cfg))


def guarded(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a stage; turn known user-facing errors into one clear line on stderr and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return run(args)
    except ConfigError as exc:
        print(f"drivepipe: bad params: {exc}", file=sys.stderr)
    except DataError as exc:
        print(f"drivepipe: bad data: {exc}", file=sys.stderr)
    except BackendUnavailable as exc:
        print(f"drivepipe: backend unavailable: {exc}", file=sys.stderr)
    except EngineError as exc:
        print(f"drivepipe: {exc}", file=sys.stderr)
    return 2


def stage_main(add_arguments: Callable[[argparse.ArgumentParser], None],
               run: Callable[[argparse.Namespace], int], description: str) -> int:
    """`python -m drivepipe.cli.<stage>`: the same stage as `drivepipe <stage>`, without the dispatcher."""
    parser = argparse.ArgumentParser(description=description)
    add_arguments(parser)
    return guarded(run, parser.parse_args())
