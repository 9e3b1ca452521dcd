"""`drivepipe` console script: one subcommand per DVC stage plus data tools.

Each subcommand lives in its own module `drivepipe.cli.<name>` exposing `add_arguments(parser)` and
`run(args) -> int`; modules are imported only when their subcommand runs (no heavy imports at start-up).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS = {
    "download": ("download", "stage 1: fetch real nuPlan-mini or generate the synthetic nuPlan-format world"),
    "preprocess": ("preprocess", "stage 2: scenarios -> SensorBundles -> content-hashed LMDB cache"),
    "train": ("train", "stage 3: train the multi-task BEV model (resumable)"),
    "evaluate": ("evaluate", "stage 4: perception and prediction metrics, plots, exports"),
    "carla-eval": ("carla_eval", "stage 5: closed-loop regression (embedded simulator or CARLA)"),
    "verify-data": ("verify_data", "validate a nuPlan-format dataset folder"),
    "show-sample": ("show_sample", "write a PNG of one cached sample (cameras + BEV layers)"),
    "merge-shards": ("merge_shards", "merge preprocess shards built on several machines into one cache"),
    "compare": ("compare", "headline metrics of two runs (revs / experiments) side by side with 95 % intervals"),
    "use-profile": ("use_profile", "rewrite params.yaml with a named profile (cpu | gpu-nuplan)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drivepipe", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        try:
            importlib.import_module(f"drivepipe.cli.{module}").add_arguments(p)
        except ModuleNotFoundError as exc:  # a subcommand whose module is not built yet
            if exc.name != f"drivepipe.cli.{module}":
                raise
            p.set_defaults(_missing=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "_missing", False):
        print(f"drivepipe {args.command}: not available in this build", file=sys.stderr)
        return 2
    from drivepipe.cli._common import guarded

    module = importlib.import_module(f"drivepipe.cli.{args._module}")
    return guarded(module.run, args)


if __name__ == "__main__":
    sys.exit(main())
