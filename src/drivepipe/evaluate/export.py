"""Exports for external tools: nuScenes detection-submission layout and a trajectory file.

Boxes are in the EGO frame of each sample (the `meta.frame` field says so): translation (x, y, z) m,
size (width, length, height) m in nuScenes order, rotation a w-first quaternion about +z, velocity (vx, vy) m/s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from drivepipe.schema import CATEGORIES
from drivepipe.utils.geometry import quat_to_yaw, yaw_to_quat
from drivepipe.utils.io import atomic_write_json


def box_records(token: str, boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray | None) -> list[dict]:
    """(D, 9) [x, y, z, l, w, h, yaw, vx, vy] boxes -> nuScenes submission records (score -1 for ground truth)."""
    records = []
    for i, (b, label) in enumerate(zip(boxes, labels, strict=True)):
        records.append({
            "sample_token": token,
            "translation": [float(v) for v in b[:3]],
            "size": [float(b[4]), float(b[3]), float(b[5])],
            "rotation": [float(v) for v in yaw_to_quat(float(b[6]))],
            "velocity": [float(b[7]), float(b[8])],
            "detection_name": CATEGORIES[int(label)],
            "detection_score": float(scores[i]) if scores is not None else -1.0,
            "attribute_name": "",
        })
    return records


def records_to_arrays(records: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of `box_records`: -> boxes (D, 9), labels (D,), scores (D,)."""
    boxes = np.array([[*r["translation"], r["size"][1], r["size"][0], r["size"][2],
                       quat_to_yaw(np.array(r["rotation"])), *r["velocity"]] for r in records]).reshape(-1, 9)
    labels = np.array([CATEGORIES.index(r["detection_name"]) for r in records], dtype=np.int64)
    scores = np.array([r["detection_score"] for r in records], dtype=np.float64)
    return boxes, labels, scores


def trajectory_records(item: dict[str, Any], traj_AKT2: np.ndarray, probs_AK: np.ndarray) -> list[dict]:
    """Per agent: K modes of future positions (ego frame, m), mode probabilities, ground truth and validity."""
    out = []
    gt = item["pred_gt"]
    for n, a in enumerate(np.flatnonzero(item["agents"])):
        out.append({"track_id": int(item["agent_track"][a]), "category": CATEGORIES[int(item["agent_labels"][a])],
                    "modes": np.round(traj_AKT2[a], 3).tolist(), "mode_probabilities": np.round(probs_AK[a], 4).tolist(),
                    "ground_truth": np.round(gt[0][n], 3).tolist(), "valid": gt[1][n].tolist()})
    return out


def write_exports(out_dir: Path, detections: dict, ground_truth: dict, trajectories: dict, use_camera: bool,
                  use_lidar: bool) -> None:
    meta = {"use_camera": use_camera, "use_lidar": use_lidar, "use_radar": False, "use_map": False,
            "use_external": False, "frame": "ego"}
    atomic_write_json(out_dir / "detections.json", {"meta": meta, "results": detections}, compact=True)
    atomic_write_json(out_dir / "ground_truth.json", {"meta": {**meta, "ground_truth": True}, "results": ground_truth},
                      compact=True)
    atomic_write_json(out_dir / "trajectories.json", {"meta": {"frame": "ego", "units": "m"}, "results": trajectories},
                      compact=True)
