"""`drivepipe carla-eval`: closed-loop regression of the trained model (embedded log-replay simulator or CARLA)."""

from __future__ import annotations

import argparse
from pathlib import Path

from drivepipe.cli._common import (
    add_engine_arguments,
    add_params_argument,
    load_config,
    write_resolved_config,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_argument(parser)
    parser.add_argument("--checkpoints", default="checkpoints",
                        help="checkpoint root (<root>/<train.experiment>/<carla_eval.checkpoint>) or one checkpoint")
    parser.add_argument("--data", default="data/nuplan_mini", help="nuPlan-format dataset root (embedded backend)")
    parser.add_argument("--cache", default="data/cache", help="LMDB cache; its header lists the val scenarios")
    parser.add_argument("--out", default="reports/carla_eval", help="output folder (metrics.json, details/)")
    add_engine_arguments(parser)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    from drivepipe.engine import engine_from_env
    from drivepipe.sim.harness import DETAILS, run_closed_loop

    out = Path(args.out)
    write_resolved_config(cfg, out / DETAILS)
    m = run_closed_loop(cfg, Path(args.checkpoints), Path(args.data), out, cache_dir=Path(args.cache),
                        engine=engine_from_env(args.engine, args.ray_address))
    if m["status"] != "ok":
        print(f"carla-eval: backend {m['backend']} unavailable, recorded without numbers: {m.get('reason')}")
        return 0
    fmt = (lambda v, spec=".1f": "n/a" if v is None else format(v, spec))
    comfortable = (m["comfort"] or {}).get("comfortable_rate")
    print(f"carla-eval [{m['backend']}]: DS {fmt(m['driving_score'])}  RC {fmt(m['route_completion'])}  "
          f"IS {fmt(m['infraction_score'], '.3f')}  collisions {m['collisions']}  interventions {m['interventions']}  "
          f"comfortable {fmt(comfortable, '.0%')}  failed {m['failed']}/{m['jobs']}")
    for agent, modes in m.get("agents", {}).items():
        for mode, a in modes.items():
            print(f"  {agent:<18} {mode:<7} DS {fmt(a['driving_score'])}  RC {fmt(a['route_completion'])}  "
                  f"CLS {fmt(a['nuplan_cls'], '.3f')}  collisions {a['collisions']}  red lights {a['red_lights']}")
    return 0


if __name__ == "__main__":
    import sys

    from drivepipe.cli._common import stage_main

    sys.exit(stage_main(add_arguments, run, __doc__))
