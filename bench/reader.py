"""Reader throughput: `load_bundle` over a `NuplanLog` against plain read + decode of the same files.

Figure: sweeps/s and images/s of `drivepipe.nuplan.bundle.load_bundle` on the preprocess windows, with annotations
(what preprocess uses) and sensors only (`with_annotations=False`). Floor, same run, same files: open + read bytes,
`decode_pcd`, `cv2.imdecode`. Ratio = reader time / floor time; target: sensors-only <= 1.20 (the reader adds < 20 %
on sensor decode). Timed sweep by sweep, the variants interleaved, `repeats` times; per sweep the fastest repeat of
each variant counts (`_common.interleaved`; page cache warm for all).
The reader decodes every JPEG at full size here, like the floor (`image_min_size=None`); the preprocess stage asks
for the reduced decode it needs, measured as `sensors_only_reduced_decode` for information.
"""

from __future__ import annotations

import time

from _common import (
    QUICK_DATA,
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

TARGET_RATIO = 1.20


def run_reader(logs: list, tokens: list[list[str]], kwargs: dict, with_annotations: bool) -> float:
    from drivepipe.nuplan.bundle import load_bundle

    tic = time.perf_counter()
    for nlog, toks in zip(logs, tokens):
        for tok in toks:
            load_bundle(nlog, tok, with_annotations=with_annotations, **kwargs)
    return time.perf_counter() - tic


def main() -> None:
    from drivepipe.nuplan.bundle import load_bundle

    args = parse_args(__doc__, lambda p: p.add_argument("--repeats", type=int, default=6))
    cfg = load_config(QUICK_DATA if args.quick else None)
    root, gen_s = dataset(cfg)
    tasks = windows_by_log(cfg, root)
    if args.quick:
        tasks = tasks[:1]
    per_log = 15 if args.quick else 10_000
    tic = time.perf_counter()
    logs = [open_log(t, cfg) for t in tasks]
    open_s = time.perf_counter() - tic
    tokens = [[w.token for w in t.windows][:per_log] for t in tasks]
    kwargs = {**bundle_kwargs(cfg), "image_min_size": None}  # full-size decode: the same work as the floor
    reduced = {**kwargs, "image_min_size": (cfg.preprocess.image_width, cfg.preprocess.image_height)}
    files = [sensor_files(nlog, tok, kwargs["channels"]) for nlog, toks in zip(logs, tokens) for tok in toks]
    log(f"{len(files)} sweeps over {len(logs)} preprocess tasks (log chunks)")
    tic = time.perf_counter()
    run_reader(logs, tokens, kwargs, True)  # warm-up: page cache, map load, per-log memo
    cold_s = time.perf_counter() - tic
    items = [(nlog, tok) for nlog, toks in zip(logs, tokens) for tok in toks]
    sweeps, images = len(files), sum(len(imgs) for _, imgs in files)
    steps = {"floor": lambda i, _: decode_floor(files[i:i + 1]),
             "sensors_only": lambda i, _: load_bundle(*items[i], with_annotations=False, **kwargs),
             "with_annotations": lambda i, _: load_bundle(*items[i], with_annotations=True, **kwargs),
             "sensors_only_reduced_decode": lambda i, _: load_bundle(*items[i], with_annotations=False, **reduced)}
    timed = interleaved(steps, len(items), args.repeats)
    best = {k: v["best_s"] for k, v in timed.items()}
    hot = hotspots(lambda: run_reader(logs, tokens, kwargs, False), skip=("run_reader", "<lambda>", "load_bundle"))
    rates = {k: {"seconds": round(s, 3), "sweeps_per_s": round(sweeps / s, 2), "images_per_s": round(images / s, 1)}
             for k, s in best.items()}
    r_sensors = ratio(best["sensors_only"], best["floor"])
    r_ann = ratio(best["with_annotations"], best["floor"])
    for nlog in logs:
        nlog.close()
    summary = (f"reader {rates['with_annotations']['sweeps_per_s']} sweeps/s with annotations "
               f"({rates['with_annotations']['images_per_s']} img/s), {rates['sensors_only']['sweeps_per_s']} "
               f"sensors-only, floor {rates['floor']['sweeps_per_s']}; ratio sensors-only {r_sensors}, "
               f"with annotations {r_ann} (target sensors-only <= {TARGET_RATIO}: "
               f"{'met' if r_sensors <= TARGET_RATIO else 'MISSED'})")
    write_result("reader", args.quick, {
        "sweeps": sweeps, "images": images, "log_tasks": len(logs), "repeats": args.repeats,
        "log_open_s_per_log": round(open_s / len(logs), 3), "first_pass_with_annotations_s": round(cold_s, 3),
        "best": rates, "pass_seconds": {k: v["pass_s"] for k, v in timed.items()},
        "ratio_sensors_only_vs_floor": r_sensors, "ratio_with_annotations_vs_floor": r_ann,
        "annotation_overhead_s_per_sweep": round((best["with_annotations"] - best["sensors_only"]) / sweeps, 5),
        "sensors_only_hotspots": hot, "target_ratio": TARGET_RATIO, "target_met": r_sensors <= TARGET_RATIO,
        "dataset_generated_s": gen_s}, summary)


if __name__ == "__main__":
    main()
