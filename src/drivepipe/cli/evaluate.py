"""`drivepipe evaluate`: perception and prediction metrics of the trained model on the val split."""

from __future__ import annotations

import argparse
from pathlib import Path

from drivepipe.cli._common import add_params_argument, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_argument(parser)
    parser.add_argument("--cache", default="data/cache", help="LMDB cache from the preprocess stage")
    parser.add_argument("--checkpoints", default="checkpoints", help="checkpoint root (experiment dirs inside)")
    parser.add_argument("--out", default="reports/evaluate", help="output folder (metrics.json, exports, pictures)")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    from drivepipe.evaluate.run import run_evaluate

    results = run_evaluate(cfg, Path(args.cache), Path(args.checkpoints), Path(args.out))
    p = results["prediction"]
    print(f"evaluate: mAP {results['detection']['mAP']:.3f}  mIoU {results['segmentation']['mIoU']:.3f}  "
          f"occ IoU {results['occupancy']['iou']:.3f}  minADE {p['minADE']}  (CV baseline "
          f"{results['baseline']['constant_velocity']['minADE']})")
    return 0


if __name__ == "__main__":
    import sys

    from drivepipe.cli._common import stage_main

    sys.exit(stage_main(add_arguments, run, __doc__))
