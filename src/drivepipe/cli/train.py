"""Stage 3 `train`: cached samples -> checkpoints/<experiment>/ (resumable, local), models/<experiment>/{best,latest}/
(exported weights, pushed) + reports/train/{live/,summary.json}.

Single process: `drivepipe train --params params.yaml`; several: `torchrun --nproc_per_node 2 -m drivepipe.cli.main
train ...` (rank 0 writes checkpoints and reports).
"""

from __future__ import annotations

import argparse
import json
import os

from drivepipe.cli._common import add_params_argument, load_config, write_resolved_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_argument(parser)
    parser.add_argument("--cache", default="data/cache", help="LMDB cache from `preprocess` (default: data/cache)")
    parser.add_argument("--checkpoints", default="checkpoints",
                        help="checkpoint root; the run writes <root>/<train.experiment>/ (default: checkpoints)")
    parser.add_argument("--models", default="models",
                        help="root of the exported best/latest weights, <root>/<train.experiment>/ (default: models)")
    parser.add_argument("--reports", default="reports/train",
                        help="<dir>/live (dvclive) + <dir>/summary.json (default: reports/train)")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    from drivepipe.train.trainer import fit

    closed_loop = None
    if cfg.train.closed_loop_every_epochs > 0:  # diagnostics beside the checkpoint, see train.closed_loop_every_epochs
        from drivepipe.sim.harness import run_for_checkpoint as closed_loop
    summary = fit(cfg, args.cache, args.checkpoints, args.reports, closed_loop=closed_loop)
    if int(os.environ.get("RANK", "0")) == 0:
        from pathlib import Path

        from drivepipe.train.checkpoint import export_models

        export_models(Path(args.checkpoints) / cfg.train.experiment, Path(args.models) / cfg.train.experiment)
        write_resolved_config(cfg, args.reports)
        print(json.dumps({k: summary[k] for k in ("step", "epoch", "nonfinite_total", "val/score") if k in summary}))
    return 0


if __name__ == "__main__":
    import sys

    from drivepipe.cli._common import stage_main

    sys.exit(stage_main(add_arguments, run, __doc__))
