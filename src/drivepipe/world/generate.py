"""Synthetic nuPlan-mini generator: world -> renderers -> nuPlan-format writer (the only time loop that writes data).

`generate_dataset(cfg, out_root)` builds one city per configured location, writes the maps tree for all four
nuPlan locations, then drives `num_logs` worlds at 20 Hz and writes each as a nuPlan log: a lidar_pc row with its
boxes, tags and lights every sweep, ego poses at 100 Hz, 8 cameras triggered at 10 Hz with their own staggered
exposure times (`world.timeline`), of which the frames `camera_frame_written` keeps are rendered and written (a
partial sensor release, as nuPlan's public one: by default every second frame, outside the edge scenes the devkit
never anchors a scenario in). By default (`lidar_release: camera_frames`) a point cloud is rendered and written only
for the sweeps with a written camera frame, the only ones preprocess anchors on; lidar noise is seeded by the
sweep's timestamp, so those clouds are the same bytes as in the full recording. Everything is
derived from `cfg.synthetic.seed` and fixed base dates, and files are written in a fixed order, so the same config
gives byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivepipe.config import CAMERA_CHANNELS, DataConfig, SyntheticConfig
from drivepipe.nuplan.scenarios import SCENES_DROPPED_EACH_END
from drivepipe.world import timeline
from drivepipe.world.writer import LOCATION_INFO, LogWriter, log_paths, write_maps

SWEEP_HZ = 20
CAMERA_EVERY = timeline.CAMERA_EVERY  # sweeps between camera frames (20 Hz lidar, 10 Hz cameras)
DT_S = 1.0 / SWEEP_HZ
_BASE_DATE = dt.datetime(2021, 5, 12, tzinfo=dt.timezone.utc)  # first synthetic drive day (nuPlan-mini era)
_VEHICLES = (12, 26, 28, 35, 38, 40, 42, 45, 50, 52)


@dataclass(frozen=True)
class LogPlan:
    """Name, place and time of one synthetic log."""

    index: int
    name: str
    location: str
    vehicle: str
    seed: int
    start_time_us: int
    num_sweeps: int
    sweeps_per_scene: int


def plan_logs(cfg: SyntheticConfig) -> list[LogPlan]:
    """Deterministic log plans; names follow `<YYYY.MM.DD.HH.MM.SS>_veh-<NN>_<start:05d>_<end:05d>` (as real logs).

    The drive start is a fixed base date plus a per-log day and time drawn from (seed, log index); start/end are
    the offsets in seconds of this snippet inside that drive.
    """
    sweeps_per_scene = int(round(cfg.scene_duration_s * SWEEP_HZ))
    num_sweeps = sweeps_per_scene * cfg.scenes_per_log
    duration_s = int(np.ceil(num_sweeps / SWEEP_HZ))
    plans = []
    for i in range(cfg.num_logs):
        rng = np.random.default_rng([cfg.seed, i, 0x109])
        drive_start = _BASE_DATE + dt.timedelta(days=int(i * 3 + rng.integers(0, 3)),
                                                seconds=int(rng.integers(8 * 3600, 20 * 3600)))
        offset_s = int(rng.integers(0, 1500))
        vehicle = f"veh-{int(rng.choice(_VEHICLES)):02d}"
        name = f"{drive_start:%Y.%m.%d.%H.%M.%S}_{vehicle}_{offset_s:05d}_{offset_s + duration_s:05d}"
        start_us = int(drive_start.timestamp()) * 1_000_000 + offset_s * 1_000_000 + int(rng.integers(0, 50_000))
        seed = int(np.random.SeedSequence([cfg.seed, i]).generate_state(1)[0])
        plans.append(LogPlan(i, name, cfg.locations[i % len(cfg.locations)], vehicle, seed, start_us, num_sweeps,
                             sweeps_per_scene))
    return plans


def camera_frame_written(sweep: int, plan: LogPlan, cfg: SyntheticConfig) -> bool:
    """Whether the cameras triggered by sweep `sweep` are rendered and written: a camera trigger (every
    `CAMERA_EVERY`-th sweep), every `cfg.camera_stride`-th frame, and, unless `cfg.edge_scene_cameras`, not in the
    first or last `SCENES_DROPPED_EACH_END` scenes (no scenario anchors there, so preprocess never reads them)."""
    if sweep % CAMERA_EVERY or (sweep // CAMERA_EVERY) % cfg.camera_stride:
        return False
    scene, scenes = sweep // plan.sweeps_per_scene, plan.num_sweeps // plan.sweeps_per_scene
    return cfg.edge_scene_cameras or SCENES_DROPPED_EACH_END <= scene < scenes - SCENES_DROPPED_EACH_END


def _write_log(out_root: Path, plan: LogPlan, city: object, cfg: SyntheticConfig, bar: object | None = None) -> int:
    """Drive one world through the plan and write it (sensor timing: `world.timeline`); returns the number of
    camera images written. The world ticks at 20 Hz, one tick past the last sweep so that the poses and exposures
    after it can be interpolated."""
    from drivepipe.world.conditions import write_conditions
    from drivepipe.world.render_lidar import render_lidar
    from drivepipe.world.rig import default_rig
    from drivepipe.world.world import World

    rig = default_rig(cfg.image_width, cfg.image_height)
    vmap = city.vector_map
    shutil.rmtree(log_paths(out_root, plan.name)[1], ignore_errors=True)  # stale blobs of an earlier run
    world = World(city, cfg, plan.seed, plan.start_time_us)
    writer = LogWriter(out_root, plan.name, plan.location, rig, plan.vehicle, plan.start_time_us,
                       jpeg_quality=cfg.jpeg_quality, box_range_m=cfg.lidar_max_range_m)
    routes: list[list[int]] = []
    prev = None
    try:
        for i in range(plan.num_sweeps + 1):
            snap = world.snapshot()
            if prev is not None:
                _write_between(writer, prev, snap, i - 1, plan, vmap, rig, camera_frame_written(i - 1, plan, cfg))
            if i == plan.num_sweeps:
                break
            if i % plan.sweeps_per_scene == 0:
                routes.append([int(r) for r in world.route_roadblock_ids()])
            released = cfg.lidar_release == "all" or camera_frame_written(i, plan, cfg)
            points = render_lidar(vmap, snap, rig, cfg) if released else None
            writer.add_sweep(snap, points, None, scene_index=i // plan.sweeps_per_scene,
                             ego_pose_token=writer.pose_token(timeline.linked_pose_index(i)))
            world.step(DT_S)
            prev = snap
            if bar is not None:
                bar.update(1)
    except BaseException:
        writer.abort()
        raise
    write_conditions(writer.close(routes), world.conditions)
    return writer.num_images


def _write_between(writer: LogWriter, a: object, b: object, sweep: int, plan: LogPlan, vmap: object,
                   rig: object, cameras: bool) -> None:
    """The ego poses in [a, b) and, if `cameras` (sweep `sweep`, at snapshot a, triggers a written camera frame),
    its images.

    The 8 images of a camera frame are rendered in one call from the world interpolated to the frame's mean exposure
    time (~12 ms after the trigger), and each is stamped with its own channel's exposure time: the stagger (±9 ms
    around the mean) is in the timestamps but not in the pixels. Rendering each channel at its own instant would
    re-rasterise the ground per channel, ~2.5x the camera cost, for at most ~15 cm of motion.
    """
    from drivepipe.world.render_camera import render_cameras

    span = b.timestamp_us - a.timestamp_us
    for k, t in timeline.pose_times(a.timestamp_us, b.timestamp_us, plan.start_time_us):
        writer.add_ego_pose(k, t, timeline.interpolate_ego(a.ego, b.ego, (t - a.timestamp_us) / span))
    if not cameras:
        return
    pose = writer.pose_token(timeline.linked_pose_index(sweep))
    frame = sweep // CAMERA_EVERY
    times = {ch: timeline.camera_time(a.timestamp_us, ch, plan.seed, frame) for ch in CAMERA_CHANNELS}
    exposure = a.timestamp_us + round(np.mean([timeline.CAMERA_OFFSETS_US[ch] for ch in CAMERA_CHANNELS]))
    images = render_cameras(vmap, timeline.interpolate_snapshot(a, b, exposure), rig, CAMERA_CHANNELS)
    for ch in CAMERA_CHANNELS:
        writer.add_image(ch, images[ch], times[ch], pose, sweep)


_FORK_STATE: dict = {}  # cities handed to forked workers without pickling them


def _write_log_in_worker(args: tuple[Path, LogPlan, SyntheticConfig]) -> tuple[int, int]:
    out_root, plan, cfg = args
    return _write_log(out_root, plan, _FORK_STATE[plan.location], cfg), plan.num_sweeps


def _write_logs_parallel(out_root: Path, plans: list[LogPlan], cities: dict, cfg: SyntheticConfig,
                         bar: object) -> int:
    """One process per log (logs are independent and seeded per log, so the files do not depend on the
    number of workers); the cities are inherited through fork."""
    import multiprocessing as mp

    _FORK_STATE.clear()
    _FORK_STATE.update(cities)
    images = 0
    with mp.get_context("fork").Pool(min(cfg.workers, len(plans))) as pool:
        for num_images, num_sweeps in pool.imap(_write_log_in_worker, [(out_root, p, cfg) for p in plans]):
            images += num_images
            bar.update(num_sweeps)
    return images


def generate_dataset(cfg: DataConfig, out_root: Path, progress: bool = True) -> dict:
    """Generate the synthetic nuPlan-format dataset under `out_root` (the devkit's documented layout).

    Args:
        cfg: data config; `cfg.synthetic` holds every knob (seed, sizes, counts).
        out_root: dataset root; receives `maps/` and `nuplan-v1.1/{splits/mini,sensor_blobs}/`.
        progress: show a tqdm bar over all sweeps.

    Returns:
        Summary: `logs` (names), `num_logs`, `sweeps`, `images`, `seconds` (simulated driving time, s),
        `locations`. Contains no wall-clock values, so it is reproducible too.
    """
    from tqdm import tqdm

    from drivepipe.world.roads import build_city

    syn = cfg.synthetic
    out_root = Path(out_root)
    cities = {}
    for location in dict.fromkeys(syn.locations):
        city = build_city(location, syn.seed)
        if (city.version, city.epsg) != (LOCATION_INFO[location][2], LOCATION_INFO[location][1]):
            raise ValueError(f"{location}: city version/EPSG {city.version}/{city.epsg} disagree with the writer's "
                             f"{LOCATION_INFO[location][2]}/{LOCATION_INFO[location][1]}")
        cities[location] = city
    write_maps(out_root / "maps", list(cities.values()))
    plans = plan_logs(syn)
    total = sum(p.num_sweeps for p in plans)
    images = 0
    with tqdm(total=total, desc="synthetic nuPlan", unit="sweep", disable=not progress) as bar:
        if syn.workers <= 1 or len(plans) <= 1:
            for plan in plans:
                images += _write_log(out_root, plan, cities[plan.location], syn, bar)
        else:
            images = _write_logs_parallel(out_root, plans, cities, syn, bar)
    return {"logs": [p.name for p in plans], "num_logs": len(plans), "sweeps": total, "images": images,
            "seconds": round(total * DT_S, 3), "locations": sorted(cities)}
