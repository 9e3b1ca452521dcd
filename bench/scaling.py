"""Scaling: preprocess and training time at 1x, 2x and 4x the dataset size (data.synthetic.num_logs).

Figure: for each size, the real `run_preprocess` (preprocess.workers processes) and a short `train.trainer.fit`
(train.epochs fixed, default 1, validation + checkpoint included) on the resulting cache; seconds, seconds per sample,
and the growth exponent b of time ~ samples^b (least-squares log-log slope over the sizes; linear scaling is 1, target
<= ~1). The floor is the 1x size itself: ratios are time per sample at kx / time per sample at 1x.
Logs are seeded per index, so the 4x dataset is generated once and the 1x / 2x datasets are its first logs (symlinks).
--quick: base = 3 logs (train, val, test) of 7 x 2 s scenes instead of params.yaml's num_logs.
"""

from __future__ import annotations

import copy
import itertools
import math
import shutil
import tempfile
import time
from pathlib import Path

from _common import WORK, _merge, dataset, load_config, log, parse_args, ratio, write_result

FACTORS = (1, 2, 4)
# --quick base: one log of 7 x 2 s scenes (3 kept by nuPlan's scene rules, so train and val both exist)
QUICK_BASE = {"data": {"synthetic": {"num_logs": 3, "scenes_per_log": 7, "scene_duration_s": 2.0}}}


def subset_root(full: Path, log_names: list[str], dest: Path) -> Path:
    """A dataset root holding only `log_names` of `full` (symlinks to the DBs, their sensor folders and the maps)."""
    from drivepipe.nuplan.layout import discover

    layout = discover(full)
    dest.mkdir(parents=True)
    (dest / "maps").symlink_to(layout.maps_root.resolve(), target_is_directory=True)
    dbs, blobs = dest / "nuplan-v1.1" / "splits" / "mini", dest / "nuplan-v1.1" / "sensor_blobs"
    dbs.mkdir(parents=True)
    blobs.mkdir(parents=True)
    for db in layout.db_files:
        if db.stem in log_names:
            (dbs / db.name).symlink_to(db.resolve())
            (blobs / db.stem).symlink_to((layout.sensor_root / db.stem).resolve(), target_is_directory=True)
    return dest


def slope(xs: list[float], ys: list[float]) -> float:
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return round(sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx), 3)


def run_size(cfg, root: Path, tmp: Path) -> dict:
    from drivepipe.preprocess.run import run_preprocess
    from drivepipe.train.trainer import fit

    tic = time.perf_counter()
    report = run_preprocess(cfg, root, tmp / "cache", tmp / "preprocess.json")
    pre_s = time.perf_counter() - tic
    tic = time.perf_counter()
    fit(cfg, tmp / "cache", tmp / "ckpt", tmp / "reports")
    train_s = time.perf_counter() - tic
    n, n_train = report["samples"], report["per_split"].get("train", 0)
    return {"samples": n, "train_samples": n_train, "preprocess_s": round(pre_s, 2), "train_s": round(train_s, 2),
            "preprocess_s_per_sample": round(pre_s / n, 4), "train_s_per_train_sample": round(train_s / n_train, 4)}


def main() -> None:
    args = parse_args(__doc__, lambda p: p.add_argument("--epochs", type=int, default=1))
    base = load_config(QUICK_BASE if args.quick else None)
    base_logs = base.data.synthetic.num_logs
    big = {"data": {"synthetic": {"num_logs": base_logs * FACTORS[-1]}}}
    over = {} if not args.quick else copy.deepcopy(QUICK_BASE)
    _merge(over, big)
    full_root, _ = dataset(load_config(over))
    from drivepipe.world.generate import plan_logs

    names = [p.name for p in plan_logs(load_config(over).data.synthetic)]
    sizes = {}
    for k in FACTORS:
        tmp = Path(tempfile.mkdtemp(dir=WORK, prefix=f"scale{k}_"))
        try:
            root = subset_root(full_root, names[:base_logs * k], tmp / "data")
            size_over = copy.deepcopy(QUICK_BASE) if args.quick else {}
            _merge(size_over, {"data": {"synthetic": {"num_logs": base_logs * k}},
                               "train": {"epochs": args.epochs, "save_every_epochs": 1, "experiment": "scale"}})
            log(f"{k}x: {base_logs * k} logs")
            sizes[f"{k}x"] = {"num_logs": base_logs * k, **run_size(load_config(size_over), root, tmp)}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    n = [s["samples"] for s in sizes.values()]
    b_pre = slope(n, [s["preprocess_s"] for s in sizes.values()])
    b_train = slope([s["train_samples"] for s in sizes.values()], [s["train_s"] for s in sizes.values()])
    keys = list(sizes)
    local = {f"{a}->{b}": {"preprocess": slope([sizes[a]["samples"], sizes[b]["samples"]],
                                               [sizes[a]["preprocess_s"], sizes[b]["preprocess_s"]]),
                           "train": slope([sizes[a]["train_samples"], sizes[b]["train_samples"]],
                                          [sizes[a]["train_s"], sizes[b]["train_s"]])}
             for a, b in itertools.pairwise(keys)}
    one = sizes["1x"]
    for s in sizes.values():
        s["ratio_preprocess_per_sample_vs_1x"] = ratio(s["preprocess_s_per_sample"], one["preprocess_s_per_sample"])
        s["ratio_train_per_sample_vs_1x"] = ratio(s["train_s_per_train_sample"], one["train_s_per_train_sample"])
    summary = (f"samples {n}; preprocess {[s['preprocess_s'] for s in sizes.values()]} s (exponent {b_pre}); train "
               f"{args.epochs} epoch {[s['train_s'] for s in sizes.values()]} s (exponent {b_train}); target <= ~1: "
               f"{'met' if max(b_pre, b_train) <= 1.1 else 'MISSED'}")
    write_result("scaling", args.quick, {"epochs": args.epochs, "base_num_logs": base_logs, "sizes": sizes,
                                         "exponent_preprocess": b_pre, "exponent_train": b_train, "local_exponents": local,
                                         "note": "run_preprocess works in-process for a single task and with a spawn "
                                                 "pool otherwise: the pool's start-up is a fixed cost",
                                         "target_exponent": 1.0, "target_met": max(b_pre, b_train) <= 1.1}, summary)


if __name__ == "__main__":
    main()
