"""The preprocess stage on the local process pool vs on Ray (same machine, same run), and Ray's overhead per task.

Figures:
- `run_preprocess` samples/s with the local pool of W workers and with Ray (a local Ray started once with W CPUs,
  its start-up timed apart), alternated `--repeats` times, best of each (and each one's first run: the local pool
  starts fresh processes every run, Ray's workers stay up between runs, keeping their last log open); the two
  caches must be byte-identical;
- overhead per task of the engine seam (`engine.ordered_map`) on a no-op task: Ray vs the local pool, W in parallel.
Floor: the local pool (the default engine). Ratio = Ray seconds / local seconds.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from _common import QUICK_DATA, WORK, dataset, load_config, log, parse_args, ratio, write_result


def noop(task: int) -> int:
    return task


def _extra(parser) -> None:
    parser.add_argument("--repeats", type=int, default=3, help="alternated runs per engine (best counts)")
    parser.add_argument("--workers", type=int, default=2, help="local pool workers = Ray CPUs")
    parser.add_argument("--tasks", type=int, default=400, help="no-op tasks for the overhead figure")


def preprocess_runs(cfg, data_root, engines: dict, repeats: int) -> dict[str, dict]:
    """Alternate the engines run by run; keep each one's best seconds and its cache bytes."""
    from drivepipe.preprocess.run import run_preprocess

    best: dict[str, dict] = {}
    for r in range(repeats):
        for name, engine in engines.items():
            out = WORK / f"ray_bench_cache_{name}"
            shutil.rmtree(out, ignore_errors=True)
            tic = time.perf_counter()
            report = run_preprocess(cfg, data_root, out, WORK / f"ray_bench_{name}.json", engine)
            seconds = time.perf_counter() - tic
            log(f"run {r}: {name} {report['samples']} samples in {seconds:.2f} s")
            if name not in best or seconds < best[name]["seconds"]:
                first = best.get(name, {}).get("first_run_seconds", round(seconds, 3))
                best[name] = {"seconds": round(seconds, 3), "samples": report["samples"],
                              "samples_per_s": round(report["samples"] / seconds, 2), "first_run_seconds": first}
            best[name]["cache_bytes"] = (out / "data.mdb").read_bytes()
    return best


def overhead(engines: dict, workers: int, n: int) -> dict[str, float]:
    """ms per no-op task through ordered_map (wall / tasks), best of 3."""
    from drivepipe.engine import ordered_map

    result = {}
    for name, engine in engines.items():
        walls = []
        for _ in range(3):
            tic = time.perf_counter()
            assert list(ordered_map(noop, range(n), engine, workers)) == list(range(n))
            walls.append(time.perf_counter() - tic)
        result[name] = round(1000 * min(walls) / n, 3)
    return result


def main() -> None:
    args = parse_args(__doc__, _extra)
    import ray

    from drivepipe.engine import EngineSpec

    cfg = load_config({**(QUICK_DATA if args.quick else {}), "preprocess": {"workers": args.workers}})
    data_root, _ = dataset(cfg)
    tic = time.perf_counter()
    src = str(Path(__file__).resolve().parents[1] / "src")
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}})
    ray_start = time.perf_counter() - tic
    engines = {"local": EngineSpec("local"), "ray": EngineSpec("ray")}
    runs = preprocess_runs(cfg, data_root, engines, 1 if args.quick else args.repeats)
    identical = runs["local"].pop("cache_bytes") == runs["ray"].pop("cache_bytes")
    per_task = overhead(engines, args.workers, 100 if args.quick else args.tasks)
    ray.shutdown()
    r = ratio(runs["ray"]["seconds"], runs["local"]["seconds"])
    summary = (f"preprocess {runs['local']['samples']} samples: local pool {runs['local']['samples_per_s']}/s, "
               f"Ray {runs['ray']['samples_per_s']}/s (ratio {r}, caches identical: {identical}); Ray start "
               f"{ray_start:.1f} s; per no-op task: Ray {per_task['ray']} ms, local pool {per_task['local']} ms")
    write_result("ray_engine", args.quick, {"workers": args.workers, "preprocess": runs, "ray_over_local": r,
                                            "caches_identical": identical, "ray_start_s": round(ray_start, 2),
                                            "overhead_ms_per_task": per_task}, summary)


if __name__ == "__main__":
    main()
