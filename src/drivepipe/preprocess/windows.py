"""Scenario candidates -> training windows and a deterministic train/val split.

A window is one anchor lidar_pc (one `Sample`). Per log, candidates with a full history (history_steps x
traj_dt_s before) and a full future (future_steps x traj_dt_s after) are kept, then every `window_stride`-th one.
The split hashes the scene token (sha256, no RNG), so the same scene always lands in the same split, whatever
subset of logs is processed; afterwards every location that has at least two scenes is made to appear in both
splits by moving whole scenes deterministically.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from drivepipe.config import PreprocessConfig

SPLITS = ("train", "val")


@dataclass(frozen=True)
class Window:
    """One sample to build: the anchor lidar_pc of a scenario plus where it goes."""

    log_name: str
    token: str
    timestamp_us: int
    scene_token: str
    scenario_type: str
    location: str
    split: str

    @property
    def key(self) -> str:
        """LMDB key `<log_name>/<token>`."""
        return f"{self.log_name}/{self.token}"


def scene_score(scene_token: str) -> float:
    """Deterministic pseudo-uniform number in [0, 1) from a scene token (sha256 of the token text)."""
    return int.from_bytes(hashlib.sha256(scene_token.encode()).digest()[:8], "big") / 2.0**64


def select_candidates(scenarios: Iterable[Any], cfg: PreprocessConfig,
                      log_span_us: Mapping[str, tuple[int, int]] | None = None) -> list[Any]:
    """Keep, per log, every `window_stride`-th scenario (by time) that has full history and future.

    Args:
        scenarios: objects with log_name, token, timestamp_us (µs), scene_token, scenario_type.
        log_span_us: per log (first, last) lidar timestamp in µs; default: the span of the log's scenarios.

    Returns:
        The kept scenarios sorted by (log_name, timestamp_us, token).
    """
    by_log: dict[str, list[Any]] = defaultdict(list)
    for s in scenarios:
        by_log[s.log_name].append(s)
    hist_us = round(cfg.history_steps * cfg.traj_dt_s * 1e6)
    fut_us = round(cfg.future_steps * cfg.traj_dt_s * 1e6)
    kept: list[Any] = []
    for log in sorted(by_log):
        cands = sorted(by_log[log], key=lambda s: (s.timestamp_us, s.token))
        first, last = (log_span_us or {}).get(log, (cands[0].timestamp_us, cands[-1].timestamp_us))
        full = [s for s in cands if s.timestamp_us - first >= hist_us and last - s.timestamp_us >= fut_us]
        kept.extend(full[:: cfg.window_stride])
    return kept


def assign_splits(scene_location: Mapping[str, str], val_fraction: float) -> dict[str, str]:
    """Scene token -> "train" | "val".

    A scene goes to val when `scene_score(token) < val_fraction`. Then, per location with >= 2 scenes, if one split
    is empty, the scene whose score is closest to the threshold on the wrong side moves over (deterministic).
    """
    split = {t: ("val" if scene_score(t) < val_fraction else "train") for t in scene_location}
    by_loc: dict[str, list[str]] = defaultdict(list)
    for token, loc in scene_location.items():
        by_loc[loc].append(token)
    for loc in sorted(by_loc):
        tokens = sorted(by_loc[loc])
        if len(tokens) < 2:
            continue
        have = {split[t] for t in tokens}
        if have == {"train"}:
            split[min(tokens, key=lambda t: (scene_score(t), t))] = "val"
        elif have == {"val"}:
            split[max(tokens, key=lambda t: (scene_score(t), t))] = "train"
    return split


def make_windows(scenarios: Iterable[Any], cfg: PreprocessConfig, log_location: Mapping[str, str],
                 log_span_us: Mapping[str, tuple[int, int]] | None = None) -> list[Window]:
    """All windows of a dataset with their split, sorted by key.

    Args:
        scenarios: `drivepipe.nuplan.scenarios.Scenario`-like objects of ALL logs (the split needs every scene,
            also when only one shard of the logs is built).
        log_location: log name -> map location.
        log_span_us: see `select_candidates`.
    """
    kept = select_candidates(scenarios, cfg, log_span_us)
    scene_loc = {s.scene_token: log_location[s.log_name] for s in kept}
    split = assign_splits(scene_loc, cfg.val_fraction)
    windows = [Window(s.log_name, s.token, int(s.timestamp_us), s.scene_token, s.scenario_type,
                      log_location[s.log_name], split[s.scene_token]) for s in kept]
    return sorted(windows, key=lambda w: w.key)
