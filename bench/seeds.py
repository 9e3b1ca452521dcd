"""Seed-to-seed spread: train the default config with 3 training seeds, evaluate each on the test split, and record
every headline metric's values, mean, standard deviation and range next to its scene-bootstrap interval width.

Training noise (seed) and test-set noise (the bootstrap interval) are separate: a difference between two configs
means something only when it exceeds both. The dataset and cache are built once (reused under the bench WORK folder);
only train.seed (and the checkpoint folder) changes between runs.

--quick: the tiny profile (tests/pipeline/tiny_params.yaml, 3 logs) instead of params.yaml; same code paths.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, cache, dataset, log, parse_args, write_result  # noqa: E402

TINY = REPO / "tests" / "pipeline" / "tiny_params.yaml"


def _config(quick: bool, seed: int) -> Any:
    from drivepipe.config import from_dict

    raw = yaml.safe_load((TINY if quick else REPO / "params.yaml").read_text())
    raw["train"].update({"seed": seed, "experiment": f"seed{seed}"})
    raw["evaluate"]["num_pictures"] = 0
    return from_dict(raw)


def run_seed(quick: bool, seed: int, work: Path) -> dict[str, Any]:
    """Train one seed on the shared cache and return the test headline metrics (metrics.json content)."""
    from drivepipe.evaluate.run import run_evaluate
    from drivepipe.train.checkpoint import export_models
    from drivepipe.train.trainer import fit

    cfg = _config(quick, seed)
    root, _ = dataset(cfg)
    cache_dir, _ = cache(cfg, root)
    fit(cfg, cache_dir, work / "checkpoints", work / f"reports_{seed}")
    export_models(work / "checkpoints" / cfg.train.experiment, work / "models" / cfg.train.experiment)
    return run_evaluate(cfg, cache_dir, work / "models", work / f"evaluate_{seed}")


def spread(runs: dict[int, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per headline metric: values by seed, mean, sample std, max - min, and the mean width of the 95 % intervals."""
    from drivepipe.evaluate.compare import headline

    per_seed = {seed: headline(m) for seed, m in runs.items()}
    names = sorted(set().union(*per_seed.values()))
    out = {}
    for name in names:
        values = [per_seed[s].get(name, (None, None))[0] for s in runs]
        widths = [ci[1] - ci[0] for s in runs if (ci := per_seed[s].get(name, (None, None))[1])]
        ok = [v for v in values if v is not None]
        out[name] = {"values": values, "mean": statistics.fmean(ok) if ok else None,
                     "std": statistics.stdev(ok) if len(ok) > 1 else None,
                     "range": max(ok) - min(ok) if ok else None,
                     "ci95_width_mean": statistics.fmean(widths) if widths else None}
    return out


def main() -> None:
    args = parse_args(__doc__, lambda p: p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2]))
    with tempfile.TemporaryDirectory(prefix="seeds_") as tmp:
        runs = {}
        for seed in args.seeds:
            log(f"seed {seed}: train + evaluate")
            runs[seed] = run_seed(args.quick, seed, Path(tmp))
    table = spread(runs)
    ratios = [(v["range"] / v["ci95_width_mean"], k) for k, v in table.items()
              if v["range"] is not None and v["ci95_width_mean"]]
    worst = max(ratios) if ratios else (float("nan"), "-")
    write_result("seeds", args.quick, {"seeds": args.seeds, "counts": runs[args.seeds[0]]["counts"],
                                       "metrics": table},
                 f"{len(args.seeds)} seeds; largest seed range / CI width: {worst[0]:.2f} ({worst[1]})")


if __name__ == "__main__":
    main()
