"""Windows: history/future filtering, stride, deterministic train/val/test split by whole log."""

from __future__ import annotations

from collections import namedtuple

import pytest

from bundle_factory import small_preprocess
from drivepipe.preprocess.windows import assign_log_splits, log_score, make_windows

Scenario = namedtuple("Scenario", "log_name token timestamp_us scene_token scenario_type index")
LOCS = {"log_a": "us-ma-boston", "log_b": "us-ma-boston", "log_c": "sg-one-north",
        "log_d": "us-pa-pittsburgh-hazelwood"}


def _scenarios(logs=tuple(LOCS), scenes_per_log=6, frames_per_scene=40) -> list[Scenario]:
    out = []
    for log in logs:
        for sc in range(scenes_per_log):
            for f in range(frames_per_scene):
                i = sc * frames_per_scene + f
                out.append(Scenario(log, f"{log}-{i:04d}", 10**15 + i * 50_000, f"{log}-scene{sc}", "unknown", i))
    return out


def test_history_future_and_stride():
    cfg = small_preprocess(history_steps=2, future_steps=3, traj_dt_s=0.5, window_stride=4)
    wins = make_windows(_scenarios(logs=("log_a",)), cfg, LOCS)
    ts = sorted(w.timestamp_us for w in wins)
    first, last = 10**15, 10**15 + 239 * 50_000
    assert ts[0] - first == 1_000_000 and last - ts[-1] >= 1_500_000  # 20 frames of history, >= 30 of future
    assert all(b - a == 4 * 50_000 for a, b in zip(ts, ts[1:]))
    assert len(wins) == len(range(20, 240 - 30, 4))


def test_split_is_by_whole_log_and_deterministic():
    cfg = small_preprocess(window_stride=2, val_logs=1, test_logs=1)
    scen = _scenarios()
    a = make_windows(scen, cfg, LOCS)
    b = make_windows(list(reversed(scen)), cfg, LOCS)
    assert a == b
    by_log: dict[str, set[str]] = {}
    for w in a:
        by_log.setdefault(w.log_name, set()).add(w.split)
    assert all(len(s) == 1 for s in by_log.values())  # a log (so every scene of it) is in one split only
    assert sorted(next(iter(s)) for s in by_log.values()) == ["test", "train", "train", "val"]


def test_log_splits_spread_over_locations():
    locs = {f"log{i:02d}": ["boston", "vegas", "pittsburgh", "singapore"][i % 4] for i in range(12)}
    split = assign_log_splits(locs, val_logs=2, test_logs=2)
    assert sorted(sum(split.values(), [])) == sorted(locs)  # every log exactly once
    assert len(split["val"]) == len(split["test"]) == 2 and len(split["train"]) == 8
    held_out = split["val"] + split["test"]
    assert len({locs[n] for n in held_out}) == 4  # the four held-out logs come from four different cities
    assert {locs[n] for n in split["train"]} == set(locs.values())  # and every city keeps training logs
    # within a city, the log with the lowest name hash is held out first
    for n in held_out:
        same_city = [m for m in locs if locs[m] == locs[n]]
        assert n == min(same_city, key=lambda m: (log_score(m), m))
    assert assign_log_splits(dict(reversed(list(locs.items()))), 2, 2) == split


def test_too_few_logs_is_a_clear_error():
    with pytest.raises(ValueError, match="preprocess.val_logs .* at least 3 logs, the dataset has 2"):
        assign_log_splits({"a": "boston", "b": "boston"}, val_logs=1, test_logs=1)
