"""Helpers shared by the stage entry points: params loading, resolved-config dump, one-line errors."""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from drivepipe import errors as E
from drivepipe.config import Config, ConfigError, load, to_dict
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
    """Run a stage; turn every expected failure into one clear line on stderr and the exit code documented in
    `drivepipe.errors` (2 input, 3 checkpoint, 4 non-finite, 5 disk full). Anything else is a bug: traceback."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return run(args)
    except ConfigError as exc:
        return _fail(f"bad params: {E.one_line(exc)}", E.EXIT_INPUT)
    except E.DataError as exc:
        return _fail(f"bad data: {E.one_line(exc)}", E.EXIT_INPUT)
    except E.BackendUnavailable as exc:
        return _fail(f"backend unavailable: {E.one_line(exc)}", E.EXIT_INPUT)
    except E.EngineError as exc:
        return _fail(E.one_line(exc), E.EXIT_INPUT)
    except E.CheckpointError as exc:
        return _fail(f"bad checkpoint: {E.one_line(exc)}", E.EXIT_CHECKPOINT)
    except E.NonFiniteError as exc:
        return _fail(f"non-finite values: {E.one_line(exc)}", E.EXIT_NONFINITE)
    except E.DiskFullError as exc:
        return _fail(f"disk full: {exc.strerror}", E.EXIT_DISK_FULL)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        return _fail(f"disk full: no space left on {exc.filename or 'the output device'}; free some space and rerun",
                     E.EXIT_DISK_FULL)


def _fail(line: str, code: int) -> int:
    if "tqdm" in sys.modules:  # end any progress bar's line first, so the error stands on a line of its own
        for bar in list(getattr(sys.modules["tqdm"].tqdm, "_instances", ())):
            bar.close()
    print(f"drivepipe: {' '.join(line.split())}", file=sys.stderr)  # always exactly one line
    return code


def stage_main(add_arguments: Callable[[argparse.ArgumentParser], None],
               run: Callable[[argparse.Namespace], int], description: str) -> int:
    """`python -m drivepipe.cli.<stage>`: the same stage as `drivepipe <stage>`, without the dispatcher."""
    parser = argparse.ArgumentParser(description=description)
    add_arguments(parser)
    return guarded(run, parser.parse_args())
