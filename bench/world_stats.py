"""Traffic statistics of a written dataset at its sample anchors (not a timing benchmark).

Reads the nuPlan logs under `--data` (default `data/nuplan_mini`, the default run's dataset) back through the
project's reader and, at every anchor (a sweep with a camera frame, where preprocess builds samples), counts the
annotated objects inside the BEV square around the ego and the ego's speed. Prints and writes, per log and over
all logs: objects per anchor, the share of anchors with the ego above 1 m/s, and distinct tracks per category
inside the BEV. The README's world-statistics sentence is this script's output.

    python bench/world_stats.py [--data data/nuplan_mini] [--bev-half-m 20]
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from _common import parse_args, write_result

from drivepipe.nuplan.db import NuplanLog
from drivepipe.nuplan.layout import discover
from drivepipe.schema import CATEGORIES
from drivepipe.utils.geometry import global_to_ego_xy_yaw, quat_to_yaw

MOVING_MPS = 1.0


def log_stats(log: NuplanLog, bev_half_m: float) -> dict:
    """Objects inside the BEV square per anchor, ego speeds and distinct tracks per category of one log."""
    pcs, boxes = log.lidar_pcs, log.boxes
    counts, speeds, tracks = [], [], set()
    for i in np.flatnonzero(log.camera_sweeps()).tolist():
        rows = boxes.rows(i)
        centres = boxes.center[rows, :2]
        local, _ = global_to_ego_xy_yaw(centres, np.zeros(len(centres)), float(pcs.xyz[i, 0]), float(pcs.xyz[i, 1]),
                                        quat_to_yaw(pcs.quat[i]))
        inside = (np.abs(local) < bev_half_m).all(axis=1)
        counts.append(int(inside.sum()))
        speeds.append(float(np.hypot(*pcs.velocity[i, :2])))
        tracks |= {(int(c), int(t)) for c, t in zip(boxes.category[rows][inside], boxes.track_id[rows][inside])}
    per_cat = Counter(CATEGORIES[c] for c, _ in tracks)
    return {"anchors": len(counts), "objects_per_anchor": float(np.mean(counts)) if counts else 0.0,
            "ego_above_1mps": float(np.mean(np.array(speeds) > MOVING_MPS)) if speeds else 0.0,
            "distinct_tracks": dict(sorted(per_cat.items())), "_counts": counts, "_speeds": speeds}


def main() -> None:
    args = parse_args(__doc__, lambda p: (p.add_argument("--data", default="data/nuplan_mini"),
                                          p.add_argument("--bev-half-m", type=float, default=20.0)))
    layout = discover(Path(args.data))
    per_log, counts, speeds = {}, [], []
    for db in sorted(layout.db_files):
        with NuplanLog(db, layout.sensor_root, None) as log:
            s = log_stats(log, args.bev_half_m)
            location = log.location
        counts += s.pop("_counts")
        speeds += s.pop("_speeds")
        per_log[Path(db).stem] = {"location": location, **s}
        print(f"{Path(db).stem} {location:28s} anchors {s['anchors']:4d}  objects/anchor "
              f"{s['objects_per_anchor']:5.1f}  ego > 1 m/s {100 * s['ego_above_1mps']:5.1f} %")
    overall = {"anchors": len(counts), "objects_per_anchor": float(np.mean(counts)),
               "ego_above_1mps": float(np.mean(np.array(speeds) > MOVING_MPS))}
    logs = list(per_log.values())
    summary = (f"{overall['anchors']} anchors of {len(logs)} logs: {overall['objects_per_anchor']:.1f} objects in the "
               f"{2 * args.bev_half_m:.0f} m BEV square per anchor (per log "
               f"{min(v['objects_per_anchor'] for v in logs):.1f}-{max(v['objects_per_anchor'] for v in logs):.1f}), "
               f"ego > 1 m/s at {100 * overall['ego_above_1mps']:.1f} % of anchors (per log "
               f"{100 * min(v['ego_above_1mps'] for v in logs):.0f}-{100 * max(v['ego_above_1mps'] for v in logs):.0f} %)")
    write_result("world_stats", False, {"data": args.data, "bev_half_m": args.bev_half_m, "overall": overall,
                                        "per_log": per_log}, summary)


if __name__ == "__main__":
    main()
