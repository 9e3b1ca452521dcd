"""GPU profile: training samples/s, peak memory and data-wait of the seed's GPU configuration.

Profile: 6 cameras at 640x384, BEV 200x200 at 0.5 m, batch 2, fp16 AMP, resnet18 (or --backbone resnet34),
train.deterministic off and cudnn.benchmark on (throughput settings). Runs the real `Trainer` (model, MultiTaskLoss,
optimizer, GradScaler, `train_step`) on
- synthetic samples shaped like real ones (every `drivepipe.sample` field, random contents, real rig extrinsics),
  served by the real DataLoader from memory: loop samples/s, data-wait fraction, and model-only samples/s on batches
  already on the GPU (the floor; ratio = loop / model-only);
- with --cache DIR, a cache built with the same preprocess params (data-wait of the real LMDB + JPEG path).
Peak memory = torch.cuda.max_memory_allocated. Without CUDA it prints that and exits 0 (no numbers are invented);
--check runs one tiny CPU step to prove the code path, writing no result.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import WORK, load_config, log, parse_args, ratio, write_result

PROFILE = {"preprocess": {"image_width": 640, "image_height": 384, "bev_size": 200, "bev_resolution_m": 0.5,
                          "cameras": ["CAM_F0", "CAM_L0", "CAM_R0", "CAM_L2", "CAM_R2", "CAM_B0"]},
           "model": {"backbone": "resnet18"},
           "train": {"batch_size": 2, "amp": "fp16", "device": "cuda", "deterministic": False,
                     "cudnn_benchmark": True, "workers": 4, "pin_memory": True, "experiment": "gpu_profile"}}
CHECK = {"preprocess": {"image_width": 64, "image_height": 32, "bev_size": 32},
         "model": {"backbone": "tiny"}, "train": {"device": "cpu", "workers": 0, "pin_memory": False}}


def fake_sample(cfg, rng) -> dict:
    """One Sample with every field at the profile's shapes (random contents, valid indices and labels)."""
    import numpy as np

    from drivepipe.preprocess.lidar import pillar_grid_size
    from drivepipe.sample import ROUTE_POINTS, validate_sample
    from drivepipe.schema import CATEGORIES
    from drivepipe.world.rig import default_rig

    p = cfg.preprocess
    n, w, h, s, th, tf = len(p.cameras), p.image_width, p.image_height, p.bev_size, p.history_steps + 1, p.future_steps
    rig = default_rig(w, h)
    K = np.array([[0.6 * w, 0, w / 2], [0, 0.6 * w, h / 2], [0, 0, 1]], np.float32)
    ext = p.bev_extent_m
    pts = rng.uniform([-ext, -ext, -1, 0], [ext, ext, 3, 1], (30_000, 4)).astype(np.float32)
    g = pillar_grid_size(p)
    cell = np.clip(((pts[:, :2] + ext) / (2 * ext) * g).astype(np.int64), 0, g - 1)
    m, a = 24, min(16, p.max_agents)
    boxes = np.concatenate([rng.uniform(-ext, ext, (m, 2)), rng.uniform(0, 1, (m, 1)), rng.uniform(1, 5, (m, 3)),
                            rng.uniform(-3, 3, (m, 3))], 1).astype(np.float32)
    sample = {
        "images": rng.integers(0, 255, (n, 3, h, w), dtype=np.uint8),
        "intrinsics": np.repeat(K[None], n, 0),
        "cam_to_ego": np.stack([np.asarray(rig.cameras[c].T_ego_from_cam, np.float32) for c in p.cameras]),
        "points": pts, "pillar_index": cell[:, 0] * g + cell[:, 1],
        "seg": (rng.random((len(p.seg_classes), s, s)) < 0.3).astype(np.uint8),
        "occ": (rng.random((1 + p.occupancy_future_steps, s, s)) < 0.05).astype(np.uint8),
        "boxes": boxes, "box_labels": rng.integers(0, len(CATEGORIES), m), "box_track": np.arange(m),
        "agent_box": np.arange(a), "agent_labels": rng.integers(0, 3, a),
        "agent_hist": rng.normal(0, 5, (a, th, 3)).astype(np.float32), "agent_hist_valid": np.ones((a, th), bool),
        "agent_fut": rng.normal(0, 5, (a, tf, 3)).astype(np.float32), "agent_fut_valid": np.ones((a, tf), bool),
        "ego_hist": np.zeros((th, 3), np.float32), "ego_hist_valid": np.ones(th, bool),
        "ego_state": np.zeros(5, np.float32), "ego_fut": np.cumsum(np.ones((tf, 3), np.float32), 0),
        "ego_fut_valid": np.ones(tf, bool),
        "route": np.stack([np.arange(ROUTE_POINTS) * 2.0, np.zeros(ROUTE_POINTS)], 1).astype(np.float32),
        "route_valid": np.ones(ROUTE_POINTS, bool)}
    validate_sample(sample)
    return sample


class MemoryDataset:
    """Fake samples held in memory, with the CacheDataset methods the loader uses."""

    def __init__(self, cfg, count: int) -> None:
        import numpy as np

        rng = np.random.default_rng(0)
        self.samples = [fake_sample(cfg, rng) for _ in range(count)]
        self.header: dict = {}

    def __len__(self) -> int:
        return len(self.samples)

    def num_points(self, index: int) -> int:
        return len(self.samples[index]["points"])

    def __getitem__(self, index: int) -> dict:
        return {k: v.copy() for k, v in self.samples[index].items()}


def measure(trainer, steps: int) -> dict:
    """Loop (real loader) vs model-only (batches already on the device) samples/s, data-wait, peak memory."""
    import torch
    from train_loop import loop_round

    from drivepipe.sample import to_device

    dev = trainer.device
    batches = [to_device(b, dev) for b, _ in zip(iter(trainer.train_loader), range(2))]
    for b in batches * 2:  # warm-up: cudnn autotune, allocator
        trainer.train_step([b])
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    loop = loop_round(trainer, 0, steps)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    tic, samples = time.perf_counter(), 0
    for i in range(steps):
        trainer.train_step([batches[i % len(batches)]])
        samples += int(batches[0]["images"].shape[0])
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    model_s = time.perf_counter() - tic
    loop_sps, model_sps = loop["samples"] / loop["seconds"], samples / model_s
    return {"loop_samples_per_s": round(loop_sps, 2), "model_only_samples_per_s": round(model_sps, 2),
            "ratio_loop_vs_model_only": ratio(loop_sps, model_sps),
            "data_wait_fraction": round(loop["wait_s"] / loop["seconds"], 3),
            "peak_memory_gb": round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if dev.type == "cuda" else None}


def run(cfg, cache_dir: Path | None, steps: int) -> dict:
    from drivepipe.train.trainer import Builders, Trainer, default_builders

    real = default_builders()
    count = max(8, 4 * cfg.train.batch_size)
    builders = real if cache_dir else Builders(model=real.model, loss=real.loss,
                                               dataset=lambda d, c, s: MemoryDataset(c, count))
    tmp = Path(tempfile.mkdtemp(dir=WORK, prefix="gpu_"))
    trainer = Trainer(cfg, cache_dir or tmp / "none", tmp / "ckpt", tmp / "reports", builders)
    try:
        trainer.net.train()
        return measure(trainer, min(steps, trainer.train_loader.batch_sampler.num_batches() - 1))
    finally:
        trainer.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    import torch

    args = parse_args(__doc__, lambda p: (p.add_argument("--backbone", default="resnet18",
                                                         choices=["resnet18", "resnet34"]),
                                          p.add_argument("--cache", type=Path, default=None),
                                          p.add_argument("--steps", type=int, default=30),
                                          p.add_argument("--check", action="store_true")))
    prof = {**PROFILE, "model": {"backbone": args.backbone}}
    if args.check:
        cfg = load_config({**prof, **CHECK})
        res = run(cfg, None, 2)
        print(f"[gpu_profile check] CPU code path ok (tiny sizes, numbers not meaningful): {res}")
        return
    if not torch.cuda.is_available():
        print("[gpu_profile] no CUDA GPU on this machine: nothing measured, no result written "
              "(run on a GPU machine, see bench/README.md)")
        return
    cfg = load_config(prof)
    steps = 10 if args.quick else args.steps
    log(f"synthetic batches, {args.backbone}, {steps} steps")
    results = {"synthetic": run(cfg, None, steps)}
    if args.cache is not None:
        log(f"cache {args.cache}")
        results["cache"] = run(cfg, args.cache, steps)
    syn = results["synthetic"]
    summary = (f"{torch.cuda.get_device_name()} {args.backbone} fp16 b2: {syn['loop_samples_per_s']} samples/s "
               f"(model-only {syn['model_only_samples_per_s']}, ratio {syn['ratio_loop_vs_model_only']}), peak "
               f"{syn['peak_memory_gb']} GB, data-wait {syn['data_wait_fraction']:.0%}"
               + (f"; cache data-wait {results['cache']['data_wait_fraction']:.0%}" if "cache" in results else ""))
    write_result(f"gpu_profile_{args.backbone}", args.quick, {
        "device": torch.cuda.get_device_name(), "profile": prof, "steps": steps, **results}, summary)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
