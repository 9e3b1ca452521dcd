"""`drivepipe evaluate`: perception and prediction metrics of the trained model on the val split."""

from __future__ import annotations

import argparse
from pathlib import Path

from drivepipe.cli._common import add_params_argument, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_argument(parser)
    parser.add_argument("--cache", default="data/cache", help="LMDB cache from the preprocess stage")
    parser.add_argument("--checkpoints", default="checkpoints", help="checkpoint root (experiment dirs inside)")
    parser.add_argument("--out", default="reports/evaluate", help="output folder (metrics.json, breakdowns.json, exports, pictures)")


def _ci(section: dict, name: str) -> str:
    value, ci = section.get(name), section.get(f"{name}_ci95")
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    from drivepipe.evaluate.run import run_evaluate

    results = run_evaluate(cfg, Path(args.cache), Path(args.checkpoints), Path(args.out))
    print(f"evaluate [test, {results['counts']['samples']} samples, {results['counts']['scenes']} scenes]: "
          f"mAP {_ci(results['detection'], 'mAP')}  mIoU {_ci(results['segmentation'], 'mIoU')}  "
          f"minFDE_K {_ci(results['prediction'], 'minFDE_K')}  (CV {_ci(results['baseline']['constant_velocity'], 'minFDE_K')})"
          f"  EPA {_ci(results['end_to_end'], 'EPA')}")
    return 0


if __name__ == "__main__":
    import sys

    from drivepipe.cli._common import stage_main

    sys.exit(stage_main(add_arguments, run, __doc__))
