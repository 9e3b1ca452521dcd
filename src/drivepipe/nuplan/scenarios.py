"""Scenario candidates of a log by the devkit rules (nuplan-devkit's scenario builder).

Scenes are ordered by `name`; the first two and the last two scenes of each log are dropped (so every candidate
has history and future), and every `lidar_pc` of the remaining scenes is a candidate (with `include_cameras`, every
one that has camera images). Its type is the tag of that sweep in `scenario_tag` (`MAX(type)` when there are
several), else "unknown".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drivepipe.nuplan.db import NuplanLog

SCENES_DROPPED_EACH_END = 2


@dataclass(frozen=True)
class Scenario:
    """One candidate: the anchor sweep `token` (16 hex) at `timestamp_us`; `index` is its row in `log.lidar_pcs`."""

    log_name: str
    token: str
    timestamp_us: int
    scene_token: str
    scenario_type: str
    index: int


def valid_scene_tokens(log: NuplanLog) -> list[str]:
    """Tokens of the scenes that yield scenarios: by name, without the first two and the last two."""
    scenes = log.scenes  # already ordered by name
    kept = scenes[SCENES_DROPPED_EACH_END:len(scenes) - SCENES_DROPPED_EACH_END]
    return [s.token for s in kept]


def enumerate_scenarios(log: NuplanLog, include_cameras: bool = False) -> list[Scenario]:
    """All scenario candidates of a log, in time order.

    With `include_cameras` only the sweeps that have camera images are candidates (the devkit's scenario-builder
    option of that name: `NuplanLog.camera_sweeps`, i.e. at 10 Hz cameras every second sweep).

    With `missing_blob_policy="skip"`, sweeps whose point-cloud file is missing are left out and counted in
    `log.skipped` (a bundle cannot be built without its lidar); with "fail" the files are not checked here.
    """
    valid = set(valid_scene_tokens(log))
    pcs = log.lidar_pcs
    with_images = log.camera_sweeps() if include_cameras else np.ones(len(pcs), bool)
    out = []
    for i in range(len(pcs)):
        scene = str(pcs.scene_token[i])
        if scene not in valid or not with_images[i]:
            continue
        if log.missing_blob_policy == "skip" and log.require_blob(str(pcs.filename[i]), "lidar_pc.filename") is None:
            continue
        token = str(pcs.token[i])
        out.append(Scenario(log_name=log.log_name, token=token, timestamp_us=int(pcs.timestamp_us[i]),
                            scene_token=scene, scenario_type=log.scenario_types.get(token, "unknown"), index=i))
    return out
