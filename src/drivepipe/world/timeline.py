"""Sensor timing of a synthetic log, nuPlan-like (nuplan-format.md §2.4, §3.2, §5.1).

* Lidar sweeps (`lidar_pc`) at 20 Hz on the world's tick times.
* Ego poses (`ego_pose`) at `POSE_HZ`, on their own grid, `POSE_PHASE_US` after the sweeps; each sweep links the
  pose nearest in time, which is therefore a little later than the sweep (nuPlan: the linked pose's timestamp
  differs from the sweep's).
* Cameras at 10 Hz: triggered around every second sweep, each channel `CAMERA_OFFSETS_US[channel]` after it (staggered
  like a spinning lidar passing the cameras front -> right -> back -> left), plus a small per-image jitter. Every
  image lies within 25 ms after its trigger sweep, so the sweep nearest to it is unique and the ±50 ms image match of
  any sweep has no tie. An image links the ego pose of its trigger sweep (so the devkit's `include_cameras` rule,
  image.ego_pose_token = lidar_pc.ego_pose_token, keeps the trigger sweeps).

The world itself is stepped at 20 Hz; states between two ticks (for poses and camera exposures) are interpolated
linearly (`interpolate_snapshot`), which is exact to well under a centimetre for 50 ms of vehicle motion.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np

from drivepipe.world_state import ActorState, EgoKinematics, WorldSnapshot

SWEEP_US = 50_000             # µs between lidar sweeps (20 Hz)
CAMERA_EVERY = 2              # sweeps per camera frame (10 Hz)
POSE_HZ = 100                 # ego_pose rate
POSE_US = 1_000_000 // POSE_HZ
POSE_PHASE_US = 1_500         # µs from a sweep to the next pose (the one it links)
CAMERA_JITTER_US = 500        # µs, max |jitter| of an image timestamp around its channel's offset
# µs from the trigger sweep to each channel's exposure (all in (0, 25 ms), distinct)
CAMERA_OFFSETS_US = {"CAM_F0": 3_000, "CAM_R0": 5_500, "CAM_R1": 8_000, "CAM_R2": 10_500, "CAM_B0": 13_000,
                     "CAM_L2": 15_500, "CAM_L1": 18_000, "CAM_L0": 20_500}
_EGO_LINEAR = ("x", "y", "z", "vx", "vy", "ax", "ay", "yaw_rate")
_ACTOR_LINEAR = ("x", "y", "z", "vx", "vy")


def pose_times(t0_us: int, t1_us: int, log_start_us: int) -> Iterator[tuple[int, int]]:
    """(pose index, timestamp µs) of the poses in [t0_us, t1_us); pose k is at log_start + phase + k / POSE_HZ."""
    first = max(0, -(-(t0_us - log_start_us - POSE_PHASE_US) // POSE_US))
    k = first
    while log_start_us + POSE_PHASE_US + k * POSE_US < t1_us:
        yield k, log_start_us + POSE_PHASE_US + k * POSE_US
        k += 1


def linked_pose_index(sweep: int) -> int:
    """Index of the pose a sweep links (the one `POSE_PHASE_US` after it)."""
    return sweep * SWEEP_US // POSE_US


def camera_time(trigger_us: int, channel: str, seed: int, frame: int) -> int:
    """Exposure timestamp (µs) of `channel`'s image triggered by the sweep at `trigger_us` (frame = camera frame
    index in the log; the jitter is a deterministic function of (seed, channel, frame))."""
    rng = np.random.default_rng([seed, frame, sorted(CAMERA_OFFSETS_US).index(channel)])
    return trigger_us + CAMERA_OFFSETS_US[channel] + int(rng.integers(-CAMERA_JITTER_US, CAMERA_JITTER_US + 1))


def wrap_yaw(yaw: float) -> float:
    """Angle wrapped to (-pi, pi]."""
    w = math.remainder(float(yaw), 2 * math.pi)
    return math.pi if w <= -math.pi else w


def _lerp(a: object, b: object, w: float, fields: tuple[str, ...]) -> dict[str, float]:
    out = {f: (1 - w) * getattr(a, f) + w * getattr(b, f) for f in fields}
    out["yaw"] = wrap_yaw(a.yaw + w * math.remainder(b.yaw - a.yaw, 2 * math.pi))
    return out


def interpolate_ego(a: EgoKinematics, b: EgoKinematics, w: float) -> EgoKinematics:
    """Ego state a fraction `w` in [0, 1] of the way from `a` to `b` (yaw along the shorter arc)."""
    return dataclasses.replace(a, **_lerp(a, b, w, _EGO_LINEAR))


def interpolate_snapshot(a: WorldSnapshot, b: WorldSnapshot, t_us: int) -> WorldSnapshot:
    """The world at `t_us` between two consecutive snapshots: ego and the actors present in both interpolated;
    actors in only one of them taken from the nearer snapshot; lights and tags from the nearer snapshot."""
    span = b.timestamp_us - a.timestamp_us
    w = 0.0 if span <= 0 else min(max((t_us - a.timestamp_us) / span, 0.0), 1.0)
    near, far = (a, b) if w < 0.5 else (b, a)
    other = {o.track_id: o for o in far.actors}
    actors: list[ActorState] = []
    for act in near.actors:
        match = other.get(act.track_id)
        if match is None:
            actors.append(act)
            continue
        lo, hi = (act, match) if near is a else (match, act)
        actors.append(dataclasses.replace(act, **_lerp(lo, hi, w, _ACTOR_LINEAR)))
    return dataclasses.replace(near, timestamp_us=int(t_us), ego=interpolate_ego(a.ego, b.ego, w),
                               actors=tuple(actors))
