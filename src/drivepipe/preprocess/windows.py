"""Scenario candidates -> training windows and a deterministic train/val/test split by whole log.

A window is one anchor lidar_pc (one `Sample`). Per log, candidates with a full history (history_steps x
traj_dt_s before) and a full future (future_steps x traj_dt_s after) are kept, then every `window_stride`-th one.
The split is by whole log (`assign_log_splits`): scenes of one drive are strongly correlated (neighbouring anchors,
the same objects), so no log, and hence no scene, is in two splits. `val` selects checkpoints, `test` is reported.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from drivepipe.config import PreprocessConfig

SPLITS = ("train", "val", "test")


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


def log_score(log_name: str) -> float:
    """Deterministic pseudo-uniform number in [0, 1) from a log name (sha256 of the name)."""
    return scene_score(log_name)


def assign_log_splits(log_location: Mapping[str, str], val_logs: int, test_logs: int) -> dict[str, list[str]]:
    """Whole logs -> {"train": [...], "val": [...], "test": [...]} (sorted names; no log in two splits).

    Test logs are drawn first, then val: each draw takes, from the location with the most logs still unassigned
    (ties: location name), its log with the lowest `log_score`. That spreads the held-out logs over locations and
    leaves every location with at least one training log while the data allows. Deterministic: the same log set
    always gives the same split; with real nuPlan-mini (64 logs, 4 cities) the same rule applies.

    Raises:
        ValueError: fewer than val_logs + test_logs + 1 logs (every split needs at least one whole log).
    """
    need = val_logs + test_logs + 1
    if len(log_location) < need:
        raise ValueError(f"preprocess.val_logs + preprocess.test_logs: {val_logs} + {test_logs} held-out logs need "
                         f"at least {need} logs, the dataset has {len(log_location)} (add data.synthetic.num_logs)")
    remaining: dict[str, list[str]] = defaultdict(list)
    for name in sorted(log_location, key=lambda n: (log_score(n), n)):
        remaining[log_location[name]].append(name)
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for split, count in (("test", test_logs), ("val", val_logs)):
        for _ in range(count):
            loc = min(remaining, key=lambda loc: (-len(remaining[loc]), loc))
            out[split].append(remaining[loc].pop(0))
    out["train"] = [n for names in remaining.values() for n in names]
    return {k: sorted(v) for k, v in out.items()}


def make_windows(scenarios: Iterable[Any], cfg: PreprocessConfig, log_location: Mapping[str, str],
                 log_span_us: Mapping[str, tuple[int, int]] | None = None) -> list[Window]:
    """All windows of a dataset with their split, sorted by key.

    Args:
        scenarios: `drivepipe.nuplan.scenarios.Scenario`-like objects of ALL logs (the split needs every scene,
            also when only one shard of the logs is built).
        log_location: log name -> map location, for EVERY log of the dataset (the split is by whole log).
        log_span_us: see `select_candidates`.
    """
    kept = select_candidates(scenarios, cfg, log_span_us)
    split = {log: name for name, logs in assign_log_splits(log_location, cfg.val_logs, cfg.test_logs).items()
             for log in logs}
    windows = [Window(s.log_name, s.token, int(s.timestamp_us), s.scene_token, s.scenario_type,
                      log_location[s.log_name], split[s.log_name]) for s in kept]
    return sorted(windows, key=lambda w: w.key)
