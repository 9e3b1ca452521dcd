"""Preprocess throughput per worker against its decode floor, and the cache's bytes and read speed per image storage.

Figure, for the default preprocess params and for the GPU profile (6 cameras 640x384, BEV 200):
- `build_sample` samples/s on bundles already loaded, and the whole per-sample path of a worker
  (`load_bundle` + `build_sample` + `encode_sample`), both single-process;
- the real `run_preprocess` (process pool of `preprocess.workers`): samples/s and per-worker seconds per sample;
- floor, same run, same files: reading + decoding the raw JPEGs and PCDs once (`_common.decode_floor`).
The GPU profile's figure runs on a synthetic log with nuPlan's 1920x1080 camera images (GPU_DATA), since that is
what it reads; the default runs on the default 480x270 synthetic data.
Ratios = time / floor time; target for the per-worker path <= 2.0.
Cache: bytes per sample, `decode_sample` and `LmdbReader.get` samples/s for image_storage "jpeg" vs "raw".
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

from _common import (
    QUICK_DATA,
    WORK,
    bundle_kwargs,
    dataset,
    decode_floor,
    hotspots,
    interleaved,
    load_config,
    log,
    open_log,
    parse_args,
    ratio,
    sensor_files,
    windows_by_log,
    write_result,
)

TARGET_RATIO = 2.0
GPU_PROFILE = {"preprocess": {"image_width": 640, "image_height": 384, "bev_size": 200, "image_storage": "jpeg"}}
# The GPU profile reads real nuPlan: 1920x1080 camera JPEGs. Its figure uses a synthetic log rendered at that size
# (one log of 5 x 2 s scenes, so that generating it stays around a minute), not the default 480x270 images.
GPU_DATA = {"data": {"synthetic": {"num_logs": 3, "scenes_per_log": 5, "scene_duration_s": 2.0,
                                   "image_width": 1920, "image_height": 1080}}}


def pick(tasks: list, n: int) -> list[tuple]:
    """Up to n windows spread over all logs: [(task, token), ...]."""
    per_log = max(1, -(-n // len(tasks)))
    return [(t, w.token) for t in tasks for w in list(t.windows)[:per_log]][:n]


def per_sample_path(cfg, picks: list[tuple], repeats: int) -> tuple[dict, list]:
    """Time load_bundle / build_sample / encode_sample and the decode floor of the same files, sample by sample and
    interleaved (`_common.interleaved`: per sample the fastest of `repeats` counts), single-threaded OpenCV as in
    the stage's worker processes."""
    import cv2

    from drivepipe.cache.lmdb_store import encode_sample
    from drivepipe.nuplan.bundle import load_bundle
    from drivepipe.preprocess.pipeline import build_sample

    cv2.setNumThreads(1)  # what preprocess.run's worker initializer does
    kwargs, p = bundle_kwargs(cfg), cfg.preprocess
    logs = {t.log_name: open_log(t, cfg) for t, _ in picks}
    files = [sensor_files(logs[t.log_name], tok, kwargs["channels"]) for t, tok in picks]
    decode_floor(files)  # warm the page cache
    for t, tok in picks[:2]:  # warm the map load and per-log memo
        load_bundle(logs[t.log_name], tok, **kwargs)
    samples: list = [None] * len(picks)

    def build(i: int, bundle):
        samples[i] = build_sample(bundle, p)
        return samples[i]

    timed = interleaved({"floor": lambda i, _: decode_floor(files[i:i + 1]),
                         "load_bundle": lambda i, _: load_bundle(logs[picks[i][0].log_name], picks[i][1], **kwargs),
                         "build_sample": build,
                         "encode": lambda i, s: encode_sample(s, {"k": 0}, p.image_storage, p.jpeg_quality)},
                        len(picks), repeats)
    bundles = [load_bundle(logs[t.log_name], tok, **kwargs) for t, tok in picks]
    hot = hotspots(lambda: [build_sample(b, p) for b in bundles], skip=("build_sample", "<listcomp>"))
    for nlog in logs.values():
        nlog.close()
    best = {k: v["best_s"] for k, v in timed.items()}
    n, n_images = len(picks), sum(len(imgs) for _, imgs in files)
    worker_s = best["load_bundle"] + best["build_sample"] + best["encode"]
    return {"samples": n, "images_decoded": n_images, "repeats": repeats,
            "best_s": {k: round(v, 4) for k, v in best.items()},
            "pass_s": {k: v["pass_s"] for k, v in timed.items()},
            "build_sample_per_s": round(n / best["build_sample"], 2), "worker_path_per_s": round(n / worker_s, 2),
            "floor_per_s": round(n / best["floor"], 2),
            "ratio_load_bundle_vs_floor": ratio(best["load_bundle"], best["floor"]),
            "ratio_build_sample_vs_floor": ratio(best["build_sample"], best["floor"]),
            "ratio_encode_vs_floor": ratio(best["encode"], best["floor"]),
            "ratio_worker_path_vs_floor": ratio(worker_s, best["floor"]),
            "build_sample_hotspots": hot}, samples


def cache_storage(cfg, samples: list) -> dict:
    """Bytes per sample, decode and LmdbReader.get speed for image_storage jpeg vs raw."""
    from drivepipe.cache.lmdb_store import LmdbReader, LmdbWriter, close_shared_envs, decode_sample, encode_sample

    out = {}
    for storage in ("jpeg", "raw"):
        tic = time.perf_counter()
        values = [encode_sample(s, {"i": i}, storage, cfg.preprocess.jpeg_quality) for i, s in enumerate(samples)]
        enc_s = time.perf_counter() - tic
        tic = time.perf_counter()
        for v in values:
            decode_sample(v)
        dec_s = time.perf_counter() - tic
        tmp = Path(tempfile.mkdtemp(dir=WORK, prefix="lmdb_"))
        keys = [f"k/{i:06d}" for i in range(len(values))]
        with LmdbWriter(tmp / "cache") as writer:
            writer.put_many(zip(keys, values))
            writer.finish({"count": len(keys)})
        reader = LmdbReader(tmp / "cache")
        for k in keys:  # warm
            reader.get_raw(k)
        tic = time.perf_counter()
        for k in keys:
            reader.get(k)
        get_s = time.perf_counter() - tic
        close_shared_envs()
        shutil.rmtree(tmp, ignore_errors=True)
        n = len(values)
        out[storage] = {"bytes_per_sample": int(sum(map(len, values)) / n), "encode_per_s": round(n / enc_s, 1),
                        "decode_per_s": round(n / dec_s, 1), "lmdb_get_per_s": round(n / get_s, 1)}
    out["raw_vs_jpeg_bytes"] = ratio(out["raw"]["bytes_per_sample"], out["jpeg"]["bytes_per_sample"])
    out["raw_vs_jpeg_get_speed"] = ratio(out["raw"]["lmdb_get_per_s"], out["jpeg"]["lmdb_get_per_s"])
    return out


def whole_stage(cfg, root: Path, floor_per_sample_s: float) -> dict:
    """The real run_preprocess into a temp dir: samples/s overall and per worker, vs the floor."""
    from drivepipe.preprocess.run import run_preprocess

    tmp = Path(tempfile.mkdtemp(dir=WORK, prefix="pre_"))
    try:
        report = run_preprocess(cfg, root, tmp / "cache", tmp / "report.json")
        cache_bytes = (tmp / "cache" / "data.mdb").stat().st_size
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n, s, workers = report["samples"], report["seconds"], min(cfg.preprocess.workers, report["logs_in_shard"])
    per_worker_s = s * workers / max(n, 1)
    return {"samples": n, "seconds": s, "samples_per_s": report["samples_per_s"], "workers": workers,
            "per_worker_s_per_sample": round(per_worker_s, 4), "cache_mb": round(cache_bytes / 2**20, 1),
            "ratio_per_worker_vs_floor": ratio(per_worker_s, floor_per_sample_s)}


def profile(name: str, cfg, root: Path, n: int, stage: bool, repeats: int = 5) -> dict:
    log(f"{name}: per-sample path on {n} samples")
    tasks = windows_by_log(cfg, root)
    path, samples = per_sample_path(cfg, pick(tasks, n), repeats)
    log(f"{name}: cache storage")
    storage = cache_storage(cfg, samples)
    out = {"preprocess": {k: v for k, v in dataclasses.asdict(cfg.preprocess).items()
                          if k in ("image_width", "image_height", "bev_size", "cameras", "workers")},
           "per_sample": path, "cache": storage}
    if stage:
        log(f"{name}: run_preprocess")
        out["run_preprocess"] = whole_stage(cfg, root, path["best_s"]["floor"] / path["samples"])
    return out


def main() -> None:
    args = parse_args(__doc__, lambda p: p.add_argument("--no-stage", action="store_true",
                                                         help="skip the whole run_preprocess runs"))
    base = QUICK_DATA if args.quick else {}
    cfg = load_config(base)
    root, _ = dataset(cfg)
    gpu_cfg = load_config({**GPU_DATA, **GPU_PROFILE})
    gpu_root, _ = dataset(gpu_cfg)
    n = 6 if args.quick else 24
    res = {"default": profile("default", cfg, root, n, not args.no_stage),
           "gpu_profile": profile("gpu_profile", gpu_cfg, gpu_root, n, not args.no_stage)}
    d, g = res["default"], res["gpu_profile"]
    worst = max(d["per_sample"]["ratio_worker_path_vs_floor"], g["per_sample"]["ratio_worker_path_vs_floor"])
    stage = (f"; run_preprocess {d['run_preprocess']['samples_per_s']} samples/s "
             f"(per-worker ratio {d['run_preprocess']['ratio_per_worker_vs_floor']})" if "run_preprocess" in d else "")
    summary = (f"default: build_sample {d['per_sample']['build_sample_per_s']}/s, worker path "
               f"{d['per_sample']['worker_path_per_s']}/s = {d['per_sample']['ratio_worker_path_vs_floor']}x floor"
               f"{stage}; gpu profile: worker path {g['per_sample']['ratio_worker_path_vs_floor']}x floor; "
               f"cache jpeg {d['cache']['jpeg']['bytes_per_sample'] / 1e3:.0f} kB vs raw "
               f"{d['cache']['raw']['bytes_per_sample'] / 1e3:.0f} kB/sample; target <= {TARGET_RATIO}: "
               f"{'met' if worst <= TARGET_RATIO else 'MISSED'}")
    write_result("preprocess", args.quick, {**res, "target_ratio": TARGET_RATIO, "target_met": worst <= TARGET_RATIO,
                                            "gpu_profile_note": "camera JPEGs at nuPlan's 1920x1080 (one synthetic "
                                                                "log rendered at that size, GPU_DATA)"},
                 summary)


if __name__ == "__main__":
    main()
