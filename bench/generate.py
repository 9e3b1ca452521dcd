"""Synthetic dataset generation: wall time of `generate_dataset` on the default params, and where the time goes.

Figure: seconds, sweeps/s and images/s of `drivepipe.world.generate.generate_dataset(cfg.data, tmpdir)`; then the
split world step / lidar render / camera render / writing, timed component by component on a sample of ticks of the
first log (same loop as `generate._write_log`). Floor: the sum of the four components on the sample, extrapolated to
the full sweep count and the written camera frames; `ratio_full_vs_components` > 1 is the orchestration overhead
(maps, city build, DB close).
Target: <= 120 s on 2 cores for the default params.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from _common import QUICK_DATA, WORK, Timer, load_config, log, parse_args, ratio, write_result

TARGET_S = 120.0


def component_split(cfg, num_ticks: int) -> dict:
    """Time world step, lidar render, camera frames and LogWriter.add_sweep on `num_ticks` ticks of log 0 (the
    loop of `generate._write_log`; "camera_render" is `generate._write_between`: the interpolated camera frame with
    its JPEG writing, plus the 100 Hz ego-pose rows). Every camera trigger is rendered here, whether or not the
    config writes that frame, so `camera_frame_s` is the cost of one written frame of 8 images."""
    from drivepipe.world import timeline
    from drivepipe.world.generate import CAMERA_EVERY, DT_S, _write_between, plan_logs
    from drivepipe.world.render_lidar import render_lidar
    from drivepipe.world.rig import default_rig
    from drivepipe.world.roads import build_city
    from drivepipe.world.world import World
    from drivepipe.world.writer import LogWriter

    syn = cfg.data.synthetic
    plan = plan_logs(syn)[0]
    t = Timer()
    with t("city_build"):
        city = build_city(plan.location, syn.seed)
    rig = default_rig(syn.image_width, syn.image_height)
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        world = World(city, syn, plan.seed, plan.start_time_us)
        writer = LogWriter(Path(tmp), plan.name, plan.location, rig, plan.vehicle, plan.start_time_us,
                           jpeg_quality=syn.jpeg_quality, box_range_m=syn.lidar_max_range_m)
        prev = None
        for i in range(num_ticks + 1):
            with t("world_step"):
                snap = world.snapshot()
            if prev is not None:
                with t("camera_render"):
                    _write_between(writer, prev, snap, i - 1, plan, city.vector_map, rig, (i - 1) % CAMERA_EVERY == 0)
            if i == num_ticks:
                break
            with t("lidar_render"):
                points = render_lidar(city.vector_map, snap, rig, syn)
            with t("writing"):
                writer.add_sweep(snap, points, None, scene_index=i // plan.sweeps_per_scene,
                                 ego_pose_token=writer.pose_token(timeline.linked_pose_index(i)))
            with t("world_step"):
                world.step(DT_S)
            prev = snap
        with t("writing"):
            writer.close([[int(r) for r in world.route_roadblock_ids()]])
    per_tick = {k: v / num_ticks for k, v in t.seconds.items() if k != "city_build"}
    total = sum(per_tick.values())
    frames = len(range(0, num_ticks, CAMERA_EVERY))
    return {"ticks": num_ticks, "seconds_per_tick": {k: round(v, 5) for k, v in per_tick.items()},
            "camera_frame_s": round(t.seconds["camera_render"] / frames, 5),
            "share": {k: round(v / total, 3) for k, v in per_tick.items()},
            "city_build_s": round(t.seconds["city_build"], 3), "sum_seconds_per_tick": round(total, 5)}


def full_run(cfg) -> dict:
    """Generate the whole dataset into a fresh temp dir; keep it as the shared bench dataset if none exists."""
    from drivepipe.config import config_hash
    from drivepipe.world.generate import generate_dataset

    WORK.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=WORK, prefix="gen_"))
    tic = time.perf_counter()
    summary = generate_dataset(cfg.data, tmp, progress=False)
    seconds = time.perf_counter() - tic
    shared = WORK / f"dataset_{config_hash(cfg.data)[:12]}"
    if not (shared / ".bench_complete").is_file():  # other benchmarks reuse it instead of generating again
        shutil.rmtree(shared, ignore_errors=True)
        tmp.rename(shared)
        (shared / ".bench_complete").write_text(json.dumps({"seconds": seconds}))
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"seconds": round(seconds, 2), "sweeps": summary["sweeps"], "images": summary["images"],
            "logs": summary["num_logs"], "sweeps_per_s": round(summary["sweeps"] / seconds, 2),
            "images_per_s": round(summary["images"] / seconds, 2)}


def main() -> None:
    from drivepipe.config import CAMERA_CHANNELS

    args = parse_args(__doc__)
    cfg = load_config(QUICK_DATA if args.quick else None)
    log("component split")
    split = component_split(cfg, 40 if args.quick else 120)
    log("full generate_dataset")
    full = full_run(cfg)
    per_tick = sum(v for k, v in split["seconds_per_tick"].items() if k != "camera_render")
    frames = full["images"] / len(CAMERA_CHANNELS)  # written camera frames, 8 images each
    predicted = per_tick * full["sweeps"] + split["camera_frame_s"] * frames
    share = ", ".join(f"{k} {v:.0%}" for k, v in split["share"].items())
    summary = (f"{full['seconds']:.1f} s for {full['sweeps']} sweeps ({full['sweeps_per_s']:.1f} sweeps/s, "
               f"{full['images_per_s']:.0f} img/s); split: {share}; full/components "
               f"{ratio(full['seconds'], predicted)}; target <= {TARGET_S:.0f} s"
               + (" (quick size)" if args.quick else f": {'met' if full['seconds'] <= TARGET_S else 'MISSED'}"))
    write_result("generate", args.quick, {
        "params": {"num_logs": cfg.data.synthetic.num_logs, "scenes_per_log": cfg.data.synthetic.scenes_per_log,
                   "image": [cfg.data.synthetic.image_width, cfg.data.synthetic.image_height],
                   "lidar_beams": cfg.data.synthetic.lidar_beams,
                   "generate_workers": getattr(cfg.data.synthetic, "workers", 1)},
        "full": full, "components": split, "components_predicted_s": round(predicted, 2),
        "ratio_full_vs_components": ratio(full["seconds"], predicted), "target_s": TARGET_S,
        "target_met": None if args.quick else full["seconds"] <= TARGET_S}, summary)


if __name__ == "__main__":
    main()
