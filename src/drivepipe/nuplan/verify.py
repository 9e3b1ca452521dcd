"""`verify-data`: check a nuPlan-format dataset folder end to end and count what it holds.

Checks: the layout is found; the maps index reads and every log's location has a readable map; every DB opens
read-only with its 12 tables and required columns, sane calibrations and known categories; every sensor file a row
references exists and decodes (PCD header + body, full JPEG decode; `decode=False` only checks existence, for large
real datasets). In a log with images, a sweep without a camera frame may lack its point cloud: no sensor scenario
anchors there (the devkit's `include_cameras`), and nuPlan's public sensor release holds a part of the recording.
Those are counted as `lidar_unreleased`, not problems; a missing cloud at a camera sweep is a problem. Problems are
collected, never raised, so one run lists everything that is wrong.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from drivepipe.errors import DataError
from drivepipe.nuplan.bundle import read_jpeg
from drivepipe.nuplan.db import NuplanLog
from drivepipe.nuplan.layout import discover
from drivepipe.nuplan.maps import MapsRoot
from drivepipe.nuplan.pcd import read_point_cloud
from drivepipe.schema import CATEGORIES

MIN_SCENES = 5  # fewer scenes per log yield no scenario (2 + 2 are dropped)


class _Problems:
    """Problem list that keeps at most `limit` entries per (file-group, kind) and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.items: list[dict[str, str]] = []
        self.limit = limit
        self._seen: Counter[tuple[str, str]] = Counter()

    def add(self, file: str | Path, problem: str, group: str = "", kind: str = "") -> None:
        key = (group or str(file), kind or problem)
        self._seen[key] += 1
        if self._seen[key] <= self.limit:
            self.items.append({"file": str(file), "problem": problem})

    def summary(self) -> list[dict[str, str]]:
        extra = [{"file": group, "problem": f"{n - self.limit} more problem(s) of this kind not listed: {kind}"}
                 for (group, kind), n in self._seen.items() if n > self.limit]
        return self.items + extra

    @property
    def total(self) -> int:
        """Problems found, listed or not."""
        return sum(self._seen.values())


def verify_dataset(root: Path | str | None, decode: bool = True, max_listed: int = 20) -> dict[str, Any]:
    """Verify a dataset and return a JSON-able report.

    Args:
        root: dataset root (None = `NUPLAN_DATA_ROOT`, see `layout.discover`).
        decode: decode every blob (True) or only check that it exists.
        max_listed: problems listed per log and kind; the rest are summarised in one entry.

    Returns:
        {"root", "db_files", "sensor_root", "maps_root", "logs", "scenes", "lidar_sweeps", "lidar_unreleased"
        (sweeps without a camera frame whose point cloud is absent), "images" (channel -> count), "boxes" (category -> count), "duration_s", "locations", "warnings", "problems" ([{file, problem}]),
        "num_problems" (all problems, including those summarised)}.
    """
    problems = _Problems(max_listed)
    report: dict[str, Any] = {"root": str(root) if root is not None else None, "logs": 0, "scenes": 0,
                              "lidar_sweeps": 0, "lidar_unreleased": 0, "images": {}, "boxes": {}, "duration_s": 0.0, "locations": [],
                              "warnings": []}
    try:
        layout = discover(root)
    except DataError as exc:
        problems.add(exc.source, exc.problem)
        report.update(problems=problems.summary(), num_problems=problems.total)
        return report
    report.update(db_files=[str(p) for p in layout.db_files], sensor_root=str(layout.sensor_root),
                  maps_root=str(layout.maps_root))
    maps = _open_maps(layout.maps_root, problems)
    images: Counter[str] = Counter()
    boxes: Counter[str] = Counter()
    locations: set[str] = set()
    for db in layout.db_files:
        try:
            log = NuplanLog(db, layout.sensor_root, maps, missing_blob_policy="fail")
        except DataError as exc:
            problems.add(exc.source, exc.problem)
            continue
        with log:
            _count(log, report, images, boxes)
            locations.add(log.location)
            report["lidar_unreleased"] += _check_blobs(log, problems, decode)
    for location in sorted(locations):
        _check_map(maps, location, problems)
    report.update(images=dict(sorted(images.items())), boxes={c: boxes[c] for c in CATEGORIES if boxes[c]},
                  locations=sorted(locations), duration_s=round(report["duration_s"], 3),
                  problems=problems.summary(), num_problems=problems.total)
    return report


def _open_maps(maps_root: Path, problems: _Problems) -> MapsRoot | None:
    try:
        return MapsRoot(maps_root)
    except DataError as exc:
        problems.add(exc.source, exc.problem)
        return None


def _check_map(maps: MapsRoot | None, location: str, problems: _Problems) -> None:
    if maps is None:
        return  # the missing index is already a problem
    try:
        maps.load(location)
    except DataError as exc:
        problems.add(exc.source, exc.problem)


def _count(log: NuplanLog, report: dict[str, Any], images: Counter[str], boxes: Counter[str]) -> None:
    report["logs"] += 1
    report["scenes"] += len(log.scenes)
    report["lidar_sweeps"] += len(log.lidar_pcs)
    report["duration_s"] += log.duration_s
    for channel, imgs in log.images.items():
        images[channel] += int(imgs.timestamp_us.size)
    for index, n in Counter(log.boxes.category.tolist()).items():
        boxes[CATEGORIES[index]] += n
    if len(log.scenes) < MIN_SCENES:
        report["warnings"].append(f"{log.db_path}: only {len(log.scenes)} scenes; a log needs >= {MIN_SCENES} "
                                  "to yield any scenario")
    for reason, n in log.skipped.items():
        report["warnings"].append(f"{log.db_path}: {n} x {reason}")


def _check_blobs(log: NuplanLog, problems: _Problems, decode: bool) -> int:
    """Every referenced sensor file exists and (if `decode`) decodes; images match their calibrated size. Returns
    the number of unreleased point clouds (absent at sweeps without a camera frame, in a log with images)."""
    group = str(log.db_path)
    optional = ~log.camera_sweeps() if log.images else np.zeros(len(log.lidar_pcs), bool)
    unreleased = 0
    for rel, may_lack in zip(log.lidar_pcs.filename, optional):
        path = log.blob_path(str(rel))
        if not path.is_file() and may_lack:
            unreleased += 1
        elif not path.is_file():
            problems.add(path, "missing blob referenced by lidar_pc.filename", group, "missing lidar blob")
        elif decode:
            try:
                read_point_cloud(path)
            except DataError as exc:
                problems.add(exc.source, exc.problem, group, "bad point cloud")
    for channel, imgs in log.images.items():
        calib = log.cameras[channel]
        for rel in imgs.filename:
            path = log.blob_path(str(rel))
            if not path.is_file():
                problems.add(path, "missing blob referenced by image.filename_jpg", group, "missing image blob")
            elif decode:
                try:
                    image = read_jpeg(path)
                except DataError as exc:
                    problems.add(exc.source, exc.problem, group, "bad image")
                    continue
                if image.shape[:2] != (calib.height, calib.width):
                    problems.add(path, f"image is {image.shape[1]}x{image.shape[0]}, camera {channel} is "
                                       f"calibrated for {calib.width}x{calib.height}", group, "image size")
    return unreleased
