"""The preprocess stage: nuPlan-format logs -> windows -> `build_sample` -> LMDB cache + `reports/preprocess.json`.

Windows and the train/val split are planned over ALL logs (cheap SQL), then only this shard's logs
(`logs[shard_index::shard_count]`) are built, in chunks of CHUNK_WINDOWS windows spread over a process pool.
Workers return encoded values (never exceptions); the parent writes them in sorted key order and the writer commits
every fixed number of records, so the cache bytes do not depend on the number of workers, and `merge_shards` of
all shards rebuilds exactly the single-run cache.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivepipe.cache.lmdb_store import (
    SAMPLE_FORMAT_VERSION,
    LmdbReader,
    LmdbWriter,
    cache_config_hash,
    cache_preprocess_dict,
    decode_meta,
    encode_sample,
)
from drivepipe.config import Config, PreprocessConfig
from drivepipe.engine import EngineSpec, connect, ordered_map
from drivepipe.errors import DataError
from drivepipe.preprocess.image import IMAGE_MEAN, IMAGE_STD
from drivepipe.preprocess.lidar import pillar_grid_size
from drivepipe.preprocess.pipeline import build_sample
from drivepipe.preprocess.windows import SPLITS, Window, assign_log_splits, make_windows
from drivepipe.sample import FIELDS, ROUTE_POINTS
from drivepipe.schema import CATEGORIES, SCHEMA_VERSION, SensorBundle
from drivepipe.utils.io import atomic_write_json, sha256_file, sha256_json

log = logging.getLogger(__name__)
PER_SAMPLE_HEADER_KEYS = ("count", "keys", "splits", "point_counts", "content_hash")
CHUNK_WINDOWS = 32  # windows per worker task (bounds the memory a result holds)
_OPEN_LOG: dict[str, Any] = {}


@dataclass
class LogResult:
    """What one worker returns for one chunk of a log: encoded records (key, value, info) in key order, samples
    skipped by reason, missing sensor files, and `error` = (source, problem) when the failure policy is "fail"
    (exceptions with a custom __init__ do not survive pickling, so the parent raises)."""

    log_name: str
    records: list[tuple[str, bytes, dict[str, Any]]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    missing_blobs: Counter = field(default_factory=Counter)
    error: tuple[str, str] | None = None


@dataclass(frozen=True)
class LogTask:
    """A chunk of one log's windows (sorted by key) for one worker call."""

    log_name: str
    db_path: Path
    sensor_root: Path
    maps_root: Path
    windows: tuple[Window, ...]
    cfg: Config


# ------------------------------------------------------------------------------------------------- per sample
def window_meta(w: Window, conditions: dict | None = None) -> dict[str, Any]:
    """The per-sample meta stored in the value and returned by the dataset. `conditions` (the log's recording
    conditions, synthetic logs only) adds `time_of_day` and `weather` so evaluate can break metrics down by them;
    real nuPlan logs carry "unknown"."""
    c = conditions or {}
    return {"log": w.log_name, "token": w.token, "timestamp_us": w.timestamp_us, "location": w.location,
            "scenario_type": w.scenario_type, "split": w.split, "scene": w.scene_token,
            "time_of_day": str(c.get("time_of_day", "unknown")), "weather": str(c.get("weather", "unknown"))}


def _reason(exc: Exception) -> str:
    text = exc.problem if isinstance(exc, DataError) else str(exc)
    return f"{type(exc).__name__}: {text}"[:120]


def process_windows(load: Callable[[Window], SensorBundle], windows: list[Window], cfg: Config,
                    log_name: str = "") -> LogResult:
    """Build and encode the samples of one log, applying `preprocess.failure_policy` per sample."""
    p = cfg.preprocess
    result = LogResult(log_name or (windows[0].log_name if windows else ""))
    for w in sorted(windows, key=lambda w: w.key):
        try:
            bundle = load(w)
            sample = build_sample(bundle, p)
            meta = window_meta(w, bundle.meta.conditions)
            value = encode_sample(sample, meta, p.image_storage, p.jpeg_quality)
        except Exception as exc:  # noqa: BLE001 - the policy decides; "fail" names the sample
            if p.failure_policy == "fail":
                where = f" in {exc.source}" if isinstance(exc, DataError) else ""
                result.error = (f"{w.log_name}/{w.token}", f"sample failed{where}: {_reason(exc)}")
                return result
            result.skipped[_reason(exc)] += 1
            continue
        objects = sorted({(int(c), int(t)) for c, t in zip(sample["box_labels"], sample["box_track"], strict=True)})
        result.records.append((w.key, value, {**meta, "num_points": int(len(sample["points"])), "objects": objects}))
    return result


def _load_log_task(task: LogTask) -> LogResult:
    """Worker: build one chunk's samples. Never raises: a log that cannot be opened becomes `error` (policy "fail")
    or one skip reason counted once per window (policy "skip")."""
    try:
        return _build_log(task)
    except Exception as exc:  # noqa: BLE001 - exceptions must cross the process boundary as data
        result = LogResult(task.log_name)
        if task.cfg.preprocess.failure_policy == "fail":
            result.error = (str(task.db_path), f"log failed: {_reason(exc)}")
        else:
            result.skipped[f"log failed: {_reason(exc)}"] += len(task.windows)
        return result


def _open_log(task: LogTask) -> Any:
    """The worker's open NuplanLog for the task's db (one kept open: consecutive chunks share a log)."""
    from drivepipe.nuplan.db import NuplanLog
    from drivepipe.nuplan.maps import MapsRoot

    key = str(task.db_path)
    if key not in _OPEN_LOG:
        close_open_log()
        _OPEN_LOG[key] = NuplanLog(task.db_path, task.sensor_root, MapsRoot(task.maps_root),
                                   task.cfg.data.missing_blob_policy)
    return _OPEN_LOG[key]


def close_open_log() -> None:
    """Close the log kept open by `_open_log` in this process."""
    for nlog in _OPEN_LOG.values():
        nlog.close()
    _OPEN_LOG.clear()


def bundle_kwargs(p: PreprocessConfig) -> dict[str, Any]:
    """The `load_bundle` arguments a sample of these preprocess params needs (also used by bench/)."""
    return {"channels": list(p.cameras), "history_steps": p.history_steps,
            "future_steps": max(p.future_steps, p.occupancy_future_steps), "dt_s": p.traj_dt_s,
            "map_radius_m": p.bev_extent_m + p.bev_resolution_m, "image_min_size": (p.image_width, p.image_height),
            "map_classes": p.seg_classes}


def _build_log(task: LogTask) -> LogResult:
    """Load each window's bundle from the (cached) open log and process it."""
    from drivepipe.nuplan.bundle import load_bundle

    p = task.cfg.preprocess
    nlog = _open_log(task)
    blobs_before = Counter(nlog.skipped)

    kwargs = bundle_kwargs(p)

    def load(w: Window) -> SensorBundle:
        return load_bundle(nlog, w.token, with_annotations=True, **kwargs)

    result = process_windows(load, list(task.windows), task.cfg, task.log_name)
    result.missing_blobs.update(Counter(nlog.skipped) - blobs_before)
    return result


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)


def _map_logs(tasks: list[LogTask], workers: int, engine: EngineSpec | None = None) -> Iterator[LogResult]:
    """Results in task order on the chosen engine (default: the local pool of `workers` spawned processes).

    Consecutive tasks are chunks of the same log: handing them out two by two per worker call keeps most of a log in
    one process, so its box table and map are loaded there once."""
    try:
        yield from ordered_map(_load_log_task, tasks, engine, workers, initializer=_worker_init, group=2)
    finally:
        close_open_log()


# ----------------------------------------------------------------------------------------------------- header
def field_specs(p: PreprocessConfig) -> dict[str, dict[str, Any]]:
    """Per-field dtype and shape (None = variable length) of the stored samples."""
    n, s, th, tf = len(p.cameras), p.bev_size, p.history_steps + 1, p.future_steps
    shapes = {"images": [n, 3, p.image_height, p.image_width], "intrinsics": [n, 3, 3], "cam_to_ego": [n, 4, 4],
              "points": [None, 4], "pillar_index": [None], "seg": [len(p.seg_classes), s, s],
              "occ": [1 + p.occupancy_future_steps, s, s], "boxes": [None, 9], "box_labels": [None],
              "box_track": [None], "agent_box": [None], "agent_labels": [None], "agent_hist": [None, th, 3],
              "agent_hist_valid": [None, th], "agent_fut": [None, tf, 3], "agent_fut_valid": [None, tf],
              "ego_hist": [th, 3], "ego_hist_valid": [th], "ego_state": [5], "ego_fut": [tf, 3],
              "ego_fut_valid": [tf], "route": [ROUTE_POINTS, 2], "route_valid": [ROUTE_POINTS]}
    return {name: {"dtype": FIELDS[name][0].str, "shape": shapes[name]} for name in FIELDS}


def dataset_manifest_hash(data_root: Path, db_files: list[Path]) -> str:
    """sha256 of `<data_root>/manifest.json` if present, else of the sorted (relative db path, size) list."""
    manifest = Path(data_root) / "manifest.json"
    if manifest.is_file():
        return sha256_file(manifest)
    rows = sorted((str(Path(f).relative_to(data_root)) if Path(f).is_relative_to(data_root) else Path(f).name,
                   Path(f).stat().st_size) for f in db_files)
    return sha256_json(rows)


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("drivepipe")
    except PackageNotFoundError:
        return "unknown"


def header_common(cfg: Config, manifest_hash: str,
                  log_splits: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """The header fields that depend on the config and the dataset only (not on which samples were written).
    `log_splits` is the split of EVERY log of the dataset ({"train": [log...], "val": [...], "test": [...]})."""
    p = cfg.preprocess
    return {"log_splits": {k: list((log_splits or {}).get(k, [])) for k in SPLITS},
            "schema_version": SCHEMA_VERSION, "sample_format_version": SAMPLE_FORMAT_VERSION,
            "package_version": _package_version(),
            "preprocess": cache_preprocess_dict(cfg), "config_hash": cache_config_hash(cfg),
            "data_manifest_hash": manifest_hash, "fields": field_specs(p), "categories": list(CATEGORIES),
            "seg_classes": list(p.seg_classes), "cameras": list(p.cameras), "image_mean": list(IMAGE_MEAN),
            "image_std": list(IMAGE_STD), "image_storage": p.image_storage, "bev_size": p.bev_size,
            "bev_resolution_m": p.bev_resolution_m, "pillar_grid": pillar_grid_size(p),
            "pillar_size_m": p.pillar_size_m, "route_points": ROUTE_POINTS}


def build_header(common: dict[str, Any], infos: list[dict[str, Any]]) -> dict[str, Any]:
    """Common fields + the sorted key list, split index lists and per-key point counts."""
    infos = sorted(infos, key=lambda i: f"{i['log']}/{i['token']}")
    splits: dict[str, list[int]] = {k: [] for k in SPLITS}
    for idx, info in enumerate(infos):
        splits.setdefault(info["split"], []).append(idx)
    return {**common, "count": len(infos), "keys": [f"{i['log']}/{i['token']}" for i in infos], "splits": splits,
            "point_counts": [i["num_points"] for i in infos]}


# ------------------------------------------------------------------------------------------------------- stage
def plan_tasks(cfg: Config, data_root: Path) -> tuple[list[LogTask], str, dict[str, list[str]]]:
    """Enumerate ALL logs' scenarios, make windows + split; return (this shard's tasks in key order, each at most
    CHUNK_WINDOWS windows of one log; the dataset manifest hash; the split of every log, see `assign_log_splits`)."""
    from drivepipe.nuplan.db import NuplanLog
    from drivepipe.nuplan.layout import discover
    from drivepipe.nuplan.scenarios import enumerate_scenarios

    layout = discover(data_root)
    scenarios, locations, spans, db_of = [], {}, {}, {}
    for db in sorted(layout.db_files):
        with NuplanLog(db, layout.sensor_root, None, cfg.data.missing_blob_policy) as nlog:
            # anchors on the sweeps that have images (the devkit's include_cameras), when cameras are used
            scenarios.extend(enumerate_scenarios(nlog, include_cameras=bool(cfg.preprocess.cameras)))
            ts = nlog.lidar_pcs.timestamp_us
            name = nlog.log_name
            locations[name], spans[name], db_of[name] = nlog.location, (int(ts[0]), int(ts[-1])), Path(db)
    windows = make_windows(scenarios, cfg.preprocess, locations, spans)
    log_splits = assign_log_splits(locations, cfg.preprocess.val_logs, cfg.preprocess.test_logs)
    by_log: dict[str, list[Window]] = {}
    for w in windows:
        by_log.setdefault(w.log_name, []).append(w)
    names = sorted(db_of, key=lambda n: n + "/")  # the order of the keys "<log>/<token>"
    p = cfg.preprocess
    tasks = []
    for n in names[p.shard_index::p.shard_count]:
        wins = by_log.get(n, [])
        for i in range(0, len(wins), CHUNK_WINDOWS):
            tasks.append(LogTask(n, db_of[n], Path(layout.sensor_root), Path(layout.maps_root),
                                 tuple(wins[i:i + CHUNK_WINDOWS]), cfg))
    return tasks, dataset_manifest_hash(Path(data_root), list(layout.db_files)), log_splits


def build_report(infos: list[dict[str, Any]], skipped: Counter, blobs: Counter, seconds: float,
                 extra: dict[str, Any]) -> dict[str, Any]:
    """Counts per split / location / scenario type, skip reasons and throughput."""
    def count(key: str) -> dict[str, int]:
        return dict(sorted(Counter(i[key] for i in infos).items()))

    per_split = {**{k: 0 for k in SPLITS}, **count("split")}
    return {"samples": len(infos), "per_split": per_split, "per_location": count("location"),
            "per_scenario_type": count("scenario_type"), "per_time_of_day": count("time_of_day"),
            "per_weather": count("weather"), "skipped": dict(sorted(skipped.items())),
            "skipped_total": int(sum(skipped.values())), "missing_blobs": dict(sorted(blobs.items())),
            "seconds": round(seconds, 3),
            "samples_per_s": round(len(infos) / seconds, 3) if seconds > 0 else 0.0, **extra}


def split_counts(infos: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per split: samples, scenes, logs, locations and distinct objects per class (track ids within a log) behind the
    samples actually written (GT boxes inside the BEV)."""
    out = {}
    for split in SPLITS:
        rows = [i for i in infos if i["split"] == split]
        objects = {(i["log"], c, t) for i in rows for c, t in i.get("objects", [])}
        per_class = Counter(CATEGORIES[c] for _, c, _ in objects)
        out[split] = {"samples": len(rows), "scenes": len({(i["log"], i.get("scene", "")) for i in rows}),
                      "logs": len({i["log"] for i in rows}), "locations": sorted({i["location"] for i in rows}),
                      "distinct_objects": dict(sorted(per_class.items()))}
    return out


def check_skip_policy(infos: list[dict[str, Any]], skipped: Counter, splits: set[str], max_fraction: float,
                      source: Path) -> None:
    """Raise DataError when a split that had windows ended up empty, or when more than `max_fraction` of the
    windows were skipped (preprocess.max_skipped_fraction): a cache that silently lost data is never written."""
    total_skipped = sum(skipped.values())
    reasons = "; ".join(f"{n} x {r}" for r, n in skipped.most_common(3))
    empty = sorted(splits - {i["split"] for i in infos})
    if empty:
        raise DataError(source, f"split {empty[0]!r} is empty: all its samples were skipped ({reasons or 'none'}); "
                        "the cache was not written (fix the data: dvc repro download)")
    total = len(infos) + total_skipped
    if total and total_skipped / total > max_fraction:
        raise DataError(source, f"{total_skipped} of {total} samples skipped ({total_skipped / total:.0%} > "
                        f"preprocess.max_skipped_fraction {max_fraction:g}): {reasons}; the cache was not written")


def skip_summary(report: dict[str, Any]) -> str:
    """One line per skip reason (what `drivepipe preprocess` prints at the end)."""
    lines = [f"  {n} x {reason}" for reason, n in report["skipped"].items()]
    return "\n".join([f"skipped {report['skipped_total']} samples" + (":" if lines else ""), *lines])


def write_cache(results: Iterable[LogResult], out_dir: Path, common: dict[str, Any],
                check: Callable[[list[dict[str, Any]], Counter], None] | None = None, expected_records: int = 0,
                ) -> tuple[list[dict[str, Any]], Counter, Counter]:
    """Write per-log results (in key order) into a new cache at `out_dir`.

    Returns (sample infos, samples skipped by reason, missing sensor files by kind).

    Raises DataError for the first result that carries an error (failure_policy "fail") or when `check(infos,
    skipped)` refuses what was collected (`check_skip_policy`); nothing is left at `out_dir` then (the tmp dir is
    removed) and an existing cache there stays as it was. `expected_records` only sizes the disk-full message.
    """
    infos: list[dict[str, Any]] = []
    skipped: Counter = Counter()
    blobs: Counter = Counter()
    with LmdbWriter(out_dir, expected_records=expected_records) as writer:
        for result in results:
            if result.error is not None:
                raise DataError(*result.error)
            writer.put_many((k, v) for k, v, _ in result.records)
            infos.extend(info for _, _, info in result.records)
            skipped.update(result.skipped)
            blobs.update(result.missing_blobs)
        if check is not None:
            check(infos, skipped)
        writer.finish(build_header(common, infos))
    return infos, skipped, blobs


def _progress(results: Iterator[LogResult], bar: Any) -> Iterator[LogResult]:
    for result in results:
        bar.update(len(result.records) + sum(result.skipped.values()))
        yield result


def run_preprocess(cfg: Config, data_root: Path, out_dir: Path, report_path: Path,
                   engine: EngineSpec | None = None) -> dict[str, Any]:
    """Build the LMDB cache of this shard at `out_dir` and write the report; returns the report dict.

    `engine` (default: the local pool of preprocess.workers) runs the per-chunk work; this process alone writes."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    connect(engine)
    tasks, manifest_hash, log_splits = plan_tasks(cfg, Path(data_root))
    total = sum(len(t.windows) for t in tasks)
    bar = tqdm(total=total, unit="sample", desc="preprocess")
    splits = {w.split for t in tasks for w in t.windows}

    def check(infos: list[dict[str, Any]], skipped: Counter) -> None:
        check_skip_policy(infos, skipped, splits, cfg.preprocess.max_skipped_fraction, Path(data_root))
    with bar:  # closed (its line ended) on errors too, so the error message gets a line of its own
        results = _progress(_map_logs(tasks, cfg.preprocess.workers, engine), bar)
        infos, skipped, blobs = write_cache(results, Path(out_dir), header_common(cfg, manifest_hash, log_splits),
                                            check, total)
    extra = {"logs_total": sum(map(len, log_splits.values())), "splits": log_splits,
             "split_counts": split_counts(infos), "logs_in_shard": len({t.log_name for t in tasks}),
             "shard_index": cfg.preprocess.shard_index,
             "shard_count": cfg.preprocess.shard_count, "cache_dir": str(out_dir),
             "engine": (engine or EngineSpec()).kind}
    report = build_report(infos, skipped, blobs, time.perf_counter() - t0, extra)
    atomic_write_json(report_path, report)
    log.info("preprocess: %d samples (%d skipped) in %.1f s", len(infos), report["skipped_total"], report["seconds"])
    return report


def merge_shards(shard_dirs: list[Path], out_dir: Path) -> dict[str, Any]:
    """Merge shard caches (same config hash and dataset) into one cache equal to a single-run cache."""
    readers = [LmdbReader(d) for d in shard_dirs]
    common = {k: v for k, v in readers[0].header.items() if k not in PER_SAMPLE_HEADER_KEYS}
    for r in readers[1:]:
        other = {k: v for k, v in r.header.items() if k not in PER_SAMPLE_HEADER_KEYS}
        if other != common:
            raise DataError(r.path, "shard built with other params or data than the first shard; rebuild it")
    owner: dict[str, LmdbReader] = {}
    for r in readers:
        for key in r.keys():
            if key in owner:
                raise DataError(r.path, f"key {key} is also in {owner[key].path}; shards overlap")
            owner[key] = r
    infos = []
    with LmdbWriter(out_dir) as writer:
        for key in sorted(owner):
            value = owner[key].get_raw(key)
            writer.put(key, value)
            infos.append({**decode_meta(value),
                          "num_points": owner[key].header["point_counts"][owner[key].key_index(key)]})
        writer.finish(build_header(common, infos))
    return {"shards": len(readers), "samples": len(infos), "cache_dir": str(out_dir)}
