"""Shared helpers of the benchmark scripts: machine info, timing, JSON results, cached synthetic datasets.

Every benchmark measures its own floor in the same run and reports ratios against it, because the machines these run
on are small and shared (absolute numbers drift with the neighbours' load; ratios drift much less).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
WORK = Path(os.environ.get("DRIVEPIPE_BENCH_WORK", "/tmp/drivepipe_bench"))  # datasets / caches reused across runs
# --quick everywhere: three short logs (5 scenes of 2 s = 200 sweeps each; the split needs 3 logs) instead of 4 logs x 7 scenes x 3 s
QUICK_DATA = {"data": {"synthetic": {"num_logs": 3, "scenes_per_log": 5, "scene_duration_s": 2.0}}}  # 3: train, val, test logs
CAVEAT = "2-core CPU, shared with other jobs: absolute numbers are noisy, compare the ratios"


def parse_args(doc: str, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """`--quick` (smaller sizes, same code paths) plus a script's own options."""
    WORK.mkdir(parents=True, exist_ok=True)
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes (same code paths)")
    if extra is not None:
        extra(parser)
    return parser.parse_args()


def _git(*args: str) -> str:
    try:  # read-only git: --no-optional-locks keeps `status` from touching the index
        out = subprocess.run(["git", "--no-optional-locks", *args], cwd=REPO, capture_output=True, text=True, check=False,
                             timeout=20)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info() -> dict[str, Any]:
    """CPU count, usable cores, torch threads, load, date (UTC), git commit and whether the tree was dirty."""
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
            "cuda_available": torch.cuda.is_available(), "python": platform.python_version(),
            "platform": platform.platform(), "loadavg_1m_at_end": round(load[0], 2),
            "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "git_commit": _git("rev-parse", "HEAD"), "git_dirty": bool(_git("status", "--porcelain", "--", "src"))}


def write_result(name: str, quick: bool, data: dict[str, Any], summary: str) -> Path:
    """Write `bench/results/<name>.json` (`<name>.quick.json` for --quick runs, so they never overwrite the full
    numbers) atomically and print the one-line summary."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "quick": quick, "caveat": CAVEAT, "machine": machine_info(), **data,
               "summary": summary}
    path = RESULTS / (f"{name}.quick.json" if quick else f"{name}.json")
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n")
    tmp.replace(path)
    print(f"[{name}{' quick' if quick else ''}] {summary}  -> {path.relative_to(REPO)}")
    return path


def _json_default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-able: {type(obj)}")


class Timer:
    """Accumulates wall-clock seconds per named component."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        tic = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - tic
            self.calls[name] = self.calls.get(name, 0) + 1


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    """Minimum wall time (s) of `repeats` calls: the least disturbed run on a shared machine."""
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return min(times)


def interleaved(steps: dict[str, Callable[[int, Any], Any]], n_items: int, repeats: int) -> dict[str, dict]:
    """Time named steps item by item, interleaved: for each repeat and each item i, every step runs as
    `out = step(i, previous step's out)` (the first step, the floor, ignores both). A burst of load from other jobs
    then hits the floor and the measured code alike. The floor runs first on even repeats and last on odd ones, so
    neither side always finds the item's files already in the CPU caches. Returns per step {"best_s": sum over
    items of the fastest repeat, "pass_s": [total of each repeat]}."""
    import numpy as np

    floor, *chain = steps
    t = {name: np.zeros((repeats, n_items)) for name in steps}
    for r in range(repeats):
        order = [floor, *chain] if r % 2 == 0 else [*chain, floor]
        for i in range(n_items):
            out = None
            for name in order:
                tic = time.perf_counter()
                result = steps[name](i, out)
                t[name][r, i] = time.perf_counter() - tic
                if name != floor:
                    out = result
    return {name: {"best_s": float(v.min(axis=0).sum()), "pass_s": [round(float(x), 4) for x in v.sum(axis=1)]}
            for name, v in t.items()}


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b > 0 else float("nan")


def load_config(overrides: dict[str, dict[str, Any]] | None = None) -> Any:
    """params.yaml of the repo with per-section overrides ({"data": {"synthetic": {...}}, "train": {...}})."""
    import yaml

    from drivepipe.config import from_dict

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in (overrides or {}).items():
        _merge(raw.setdefault(section, {}), values)
    return from_dict(raw)


def _merge(dst: dict[str, Any], src: dict[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v


def dataset(cfg: Any) -> tuple[Path, float | None]:
    """A synthetic dataset for `cfg.data`, generated once under WORK and reused (keyed by the data config hash).

    Returns (root, generation seconds or None when it was reused)."""
    from drivepipe.config import config_hash
    from drivepipe.world.generate import generate_dataset

    root = WORK / f"dataset_{config_hash(cfg.data)[:12]}"
    done = root / ".bench_complete"
    if done.is_file():
        return root, None
    tic = time.perf_counter()
    generate_dataset(cfg.data, root, progress=False)
    seconds = time.perf_counter() - tic
    done.write_text(json.dumps({"seconds": seconds}))
    return root, seconds


def cache(cfg: Any, data_root: Path, tag: str = "") -> tuple[Path, float | None]:
    """An LMDB cache of `data_root` built by the real `run_preprocess`, reused when already built for this config."""
    from drivepipe.cache.lmdb_store import cache_config_hash
    from drivepipe.preprocess.run import run_preprocess

    out = WORK / f"cache_{cache_config_hash(cfg)[:12]}{tag}"
    done = out.parent / (out.name + ".bench_complete")
    if done.is_file() and (out / "data.mdb").is_file():
        return out, None
    tic = time.perf_counter()
    run_preprocess(cfg, data_root, out, WORK / f"{out.name}_report.json")
    seconds = time.perf_counter() - tic
    done.write_text(json.dumps({"seconds": seconds}))
    return out, seconds


def log(msg: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def windows_by_log(cfg: Any, data_root: Path) -> list[Any]:
    """The preprocess stage's own plan (`preprocess.run.plan_tasks`): one task per log with its windows."""
    from drivepipe.preprocess.run import plan_tasks

    tasks, _, _ = plan_tasks(cfg, data_root)
    return tasks


def open_log(task: Any, cfg: Any) -> Any:
    """`NuplanLog` of a preprocess task, opened as the stage opens it."""
    from drivepipe.nuplan.db import NuplanLog
    from drivepipe.nuplan.maps import MapsRoot

    return NuplanLog(task.db_path, task.sensor_root, MapsRoot(task.maps_root), cfg.data.missing_blob_policy)


def bundle_kwargs(cfg: Any) -> dict[str, Any]:
    """The `load_bundle` arguments the preprocess stage uses (the stage's own `preprocess.run.bundle_kwargs`)."""
    from drivepipe.preprocess.run import bundle_kwargs as stage_kwargs

    return stage_kwargs(cfg.preprocess)


def sensor_files(nlog: Any, token: str, channels: list[str]) -> tuple[Path, list[Path]]:
    """(lidar file, camera files) that `load_bundle` opens for `token` (resolved through the log's index)."""
    index = nlog.token_index[token]
    t_us = int(nlog.lidar_pcs.timestamp_us[index])
    images = []
    for ch in channels:
        j = nlog.match_image(ch, t_us) if ch in nlog.cameras else None
        if j is not None:
            images.append(nlog.blob_path(str(nlog.images[ch].filename[j])))
    return nlog.blob_path(str(nlog.lidar_pcs.filename[index])), images


def decode_floor(files: list[tuple[Path, list[Path]]]) -> tuple[int, int]:
    """The floor every reader pays: open + read the bytes, `decode_pcd` the sweep, `cv2.imdecode` each JPEG.

    Returns (sweeps, images) decoded."""
    import cv2
    import numpy as np

    from drivepipe.nuplan.pcd import decode_pcd

    n_img = 0
    for lidar, images in files:
        decode_pcd(lidar.read_bytes(), str(lidar))
        for path in images:
            cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
            n_img += 1
    return len(files), n_img


def hotspots(fn: Callable[[], Any], top: int = 8, skip: tuple[str, ...] = ()) -> list[dict]:
    """cProfile of `fn`: the drivepipe functions (and C calls such as cv2.imdecode) with the largest cumulative time;
    `skip` names functions to leave out (the one being profiled)."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    stats = pstats.Stats(prof).stats  # (file, line, func) -> (cc, nc, tottime, cumtime, callers)
    total = max(v[3] for v in stats.values())
    rows = [(f"{Path(f).parent.name}/{Path(f).name}:{fn_name}" if "drivepipe" in f else fn_name, v[3], v[2])
            for (f, _, fn_name), v in stats.items()
            if ("drivepipe" in f and fn_name not in skip) or (f == "~" and "Profiler" not in fn_name)]
    rows.sort(key=lambda r: -r[1])
    return [{"function": r[0], "cum_share": round(r[1] / total, 3), "own_share": round(r[2] / total, 3)}
            for r in rows[:top]]
