"""Training loop throughput with the real data path against the same model fed batches already in memory.

Figure: samples/s of the loop `drivepipe.train.trainer.Trainer` runs (its `train_loader` over the real
`CacheDataset` + augmentation + DataLoader, then `Trainer.train_step`: forward, loss, backward, clip, optimizer and
scheduler step) and the share of wall time spent waiting for the loader. Floor, same run, same Trainer: `train_step`
replayed on exactly the batches the loop round consumed, kept in memory (model-only; same data, so the difference is
the data path: loader waits plus the loader worker competing for the 2 cores). Ratio = loop samples/s / model-only samples/s;
target >= 0.90. Also: loader-only samples/s (iterating the DataLoader with no training), its capacity.
Loop and model-only are interleaved `rounds` times; the best round of each is kept.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import time
from pathlib import Path

from _common import QUICK_DATA, WORK, cache, dataset, load_config, log, parse_args, ratio, write_result

TARGET_RATIO = 0.90


def loop_round(trainer, epoch: int, steps: int, keep: list | None = None) -> dict:
    """`steps` optimizer steps the way `Trainer.fit` runs them; returns seconds, waiting seconds, samples.

    `keep`, when given, receives the batches used (for the model-only replay of exactly the same data)."""
    loader = trainer.train_loader
    loader.batch_sampler.set_epoch(epoch)
    batches = iter(loader)
    next(batches)  # first batch pays worker start-up: excluded (persistent workers pay it once per run)
    wait = busy = 0.0
    samples = 0
    for _ in range(steps):
        tic = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            loader.batch_sampler.set_epoch(epoch + 1000)
            batches = iter(loader)
            batch = next(batches)
        mid = time.perf_counter()
        trainer.train_step([batch])
        if keep is not None:
            keep.append(batch)
        wait += mid - tic
        busy += time.perf_counter() - mid
        samples += int(batch["images"].shape[0])
    del batches
    return {"seconds": wait + busy, "wait_s": wait, "samples": samples}


def model_only_round(trainer, batches: list, steps: int) -> dict:
    tic = time.perf_counter()
    samples = 0
    for batch in itertools.islice(itertools.cycle(batches), steps):
        trainer.train_step([batch])
        samples += int(batch["images"].shape[0])
    return {"seconds": time.perf_counter() - tic, "wait_s": 0.0, "samples": samples}


def loader_only(trainer, epoch: int, steps: int) -> dict:
    loader = trainer.train_loader
    loader.batch_sampler.set_epoch(epoch)
    batches = iter(loader)
    next(batches)
    tic = time.perf_counter()
    samples = sum(int(b["images"].shape[0]) for b in itertools.islice(batches, steps))
    del batches
    return {"seconds": time.perf_counter() - tic, "samples": samples}


def main() -> None:
    args = parse_args(__doc__, lambda p: (p.add_argument("--steps", type=int, default=0),
                                          p.add_argument("--rounds", type=int, default=3)))
    over = {**QUICK_DATA, "preprocess": {"window_stride": 1}} if args.quick else {}
    cfg = load_config({**over, "train": {"experiment": "bench"}})
    root, _ = dataset(cfg)
    cache_dir, _ = cache(cfg, root)
    steps = args.steps or (6 if args.quick else 20)
    from drivepipe.train.trainer import Trainer

    tmp = Path(tempfile.mkdtemp(dir=WORK, prefix="train_"))
    trainer = Trainer(cfg, cache_dir, tmp / "ckpt", tmp / "reports")
    try:
        trainer.net.train()
        steps = min(steps, trainer.train_loader.batch_sampler.num_batches() - 1)
        log(f"{steps} steps per round, batch {cfg.train.batch_size}, loader workers {cfg.train.workers}")
        loop_round(trainer, 100, 2)  # warm-up: worker start, allocator, first backward
        loop, model = [], []
        for r in range(args.rounds):
            used: list = []
            loop.append(loop_round(trainer, r, steps, used))
            model.append(model_only_round(trainer, used, steps))
        loader = loader_only(trainer, 99, steps)
    finally:
        trainer.close()
        shutil.rmtree(tmp, ignore_errors=True)
    per_round = sorted(ratio(m["seconds"], lp["seconds"]) for lp, m in zip(loop, model))
    r = per_round[len(per_round) // 2]  # median over rounds of (model-only time / loop time) on the same batches
    best_loop = min(loop, key=lambda x: x["seconds"] / x["samples"])
    best_model = min(model, key=lambda x: x["seconds"] / x["samples"])
    loop_sps = best_loop["samples"] / best_loop["seconds"]
    model_sps = best_model["samples"] / best_model["seconds"]
    loader_sps = loader["samples"] / loader["seconds"]
    wait_frac = round(sum(x["wait_s"] for x in loop) / sum(x["seconds"] for x in loop), 3)
    summary = (f"loop {loop_sps:.2f} samples/s vs model-only {model_sps:.2f} -> ratio {r} (target >= {TARGET_RATIO}: "
               f"{'met' if r >= TARGET_RATIO else 'MISSED'}); data-wait {wait_frac:.0%}; loader alone "
               f"{loader_sps:.2f} samples/s")
    write_result("train_loop", args.quick, {
        "batch_size": cfg.train.batch_size, "loader_workers": cfg.train.workers, "steps_per_round": steps,
        "rounds": args.rounds, "backbone": cfg.model.backbone, "image_storage": cfg.preprocess.image_storage,
        "image": [cfg.preprocess.image_width, cfg.preprocess.image_height], "bev_size": cfg.preprocess.bev_size,
        "loop_samples_per_s": round(loop_sps, 3), "model_only_samples_per_s": round(model_sps, 3),
        "loader_only_samples_per_s": round(loader_sps, 3), "ratio_loop_vs_model_only": r,
        "ratio_per_round": per_round, "ratio_note": "median over rounds of model-only time / loop time, same batches",
        "data_wait_fraction": wait_frac, "rounds_loop": loop, "rounds_model_only": model,
        "target_ratio": TARGET_RATIO, "target_met": r >= TARGET_RATIO}, summary)


if __name__ == "__main__":
    main()
