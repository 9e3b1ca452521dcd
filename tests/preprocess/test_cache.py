"""LMDB cache: round trip, header check, determinism, read-only reads, atomic writes (exception and SIGKILL)."""

from __future__ import annotations

import hashlib
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bundle_factory import make_bundle, small_config
from drivepipe.cache.lmdb_store import LmdbReader, LmdbWriter, decode_sample, encode_sample
from drivepipe.config import from_dict, to_dict
from drivepipe.data.dataset import CacheDataset
from drivepipe.errors import DataError
from drivepipe.preprocess.pipeline import build_sample
from drivepipe.preprocess.run import LogResult, build_header, header_common, merge_shards, write_cache
from drivepipe.sample import FIELDS, collate


def _results(cfg, logs=("log_a", "log_b"), per_log=2, split_of=lambda i: "train" if i % 3 else "val"):
    out, i = [], 0
    for log in logs:
        res = LogResult(log)
        for k in range(per_log):
            token = f"{i:016x}"
            sample = build_sample(make_bundle(seed=i, token=token, log_name=log), cfg.preprocess)
            meta = {"log": log, "token": token, "timestamp_us": 1000 + i, "location": "us-ma-boston",
                    "scenario_type": "stationary", "split": split_of(i)}
            value = encode_sample(sample, meta, cfg.preprocess.image_storage, cfg.preprocess.jpeg_quality)
            res.records.append((f"{log}/{token}", value, {**meta, "num_points": len(sample["points"])}))
            i += 1
        out.append(res)
    return out


def _bump_speed(sample, rng: np.random.Generator):
    assert isinstance(rng, np.random.Generator)
    return {**sample, "ego_state": sample["ego_state"] + 1}


def _write(cfg, out_dir: Path, results=None) -> Path:
    write_cache(results if results is not None else _results(cfg), out_dir, header_common(cfg, "manifest"))
    return out_dir


def _hashes(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


@pytest.mark.parametrize("storage", ["raw", "jpeg"])
def test_value_round_trip(storage):
    cfg = small_config(image_storage=storage)
    sample = build_sample(make_bundle(seed=3), cfg.preprocess)
    value = encode_sample(sample, {"log": "l"}, storage, 95)
    back, meta = decode_sample(value)
    assert meta == {"log": "l"} and b"pickle" not in value[:200]
    for name, (dtype, _, _) in FIELDS.items():
        assert back[name].dtype == dtype and back[name].shape == sample[name].shape, name
        if name != "images" or storage == "raw":
            assert np.array_equal(back[name], sample[name]), name
    diff = np.abs(back["images"].astype(int) - sample["images"].astype(int)).mean()
    assert diff < (0.5 if storage == "raw" else 25)  # random-noise test images are JPEG's worst case


def test_write_read_header_and_dataset(tmp_path):
    cfg = small_config(image_storage="raw")
    cache = _write(cfg, tmp_path / "cache")
    assert sorted(os.listdir(cache)) == ["data.mdb"] and not (tmp_path / "cache.tmp").exists()
    reader = LmdbReader(cache, expected=cfg)
    h = reader.header
    assert h["count"] == 4 and h["keys"] == sorted(h["keys"]) and h["splits"] == {"train": [1, 2], "val": [0, 3], "test": []}
    assert h["seg_classes"] == list(cfg.preprocess.seg_classes) and h["fields"]["images"]["shape"] == [2, 3, 48, 80]
    sample, meta = reader.get(h["keys"][1])
    assert meta["split"] == "train" and sample["images"].shape == (2, 3, 48, 80)
    ds = CacheDataset(cache, cfg, "train", transform=_bump_speed)
    assert len(ds) == 2 and ds.num_points(0) == len(ds[0]["points"])
    batch = collate([ds[0], ds[1]])
    assert batch["images"].shape == (2, 2, 3, 48, 80) and [m["split"] for m in batch["meta"]] == ["train", "train"]
    assert np.allclose(ds[0]["ego_state"], sample["ego_state"] + 1)
    clone = pickle.loads(pickle.dumps(ds))  # picklable for spawn workers, env reopened lazily
    assert np.array_equal(clone[1]["points"], ds[1]["points"])


def test_header_mismatch_is_refused(tmp_path):
    cfg = small_config()
    cache = _write(cfg, tmp_path / "cache")
    other = small_config(bev_size=32)
    with pytest.raises(DataError, match="dvc repro preprocess"):
        LmdbReader(cache, expected=other).keys()
    with pytest.raises(DataError, match="dvc repro preprocess"):
        CacheDataset(cache, other, "train")
    # run-only knobs (worker counts, failure policy, shards, the data folder's name) do not invalidate a cache
    fine = to_dict(small_config(workers=2, failure_policy="fail", shard_count=2, shard_index=1))
    fine["data"]["synthetic"]["workers"] += 1
    fine["data"]["root"] = "elsewhere"
    fine["data"]["nuplan"]["timeout_s"] = 1.0
    LmdbReader(cache, expected=from_dict(fine)).keys()
    raw = to_dict(cfg)
    raw["data"]["synthetic"]["seed"] += 1
    with pytest.raises(DataError, match="dvc repro preprocess"):
        LmdbReader(cache, expected=from_dict(raw)).keys()
    with pytest.raises(DataError, match="dvc repro preprocess"):
        LmdbReader(tmp_path / "missing", expected=cfg).keys()


def test_schema_version_mismatch_is_refused(tmp_path):
    cfg = small_config()
    header = {**build_header(header_common(cfg, "m"), []), "schema_version": -1}
    w = LmdbWriter(tmp_path / "cache")
    w.finish(header)
    with pytest.raises(DataError, match="schema_version.*dvc repro preprocess"):
        LmdbReader(tmp_path / "cache").header


def test_two_runs_identical_bytes_and_reads_change_nothing(tmp_path):
    cfg = small_config()
    a = _hashes(_write(cfg, tmp_path / "a"))
    b = _hashes(_write(cfg, tmp_path / "b"))
    assert a == b and list(a) == ["data.mdb"]
    reader = LmdbReader(tmp_path / "a", expected=cfg)
    for key in reader.keys():
        reader.get(key)
    ds = CacheDataset(tmp_path / "a", cfg, "val")
    _ = [ds[i] for i in range(len(ds))]
    reader.close()
    assert _hashes(tmp_path / "a") == a


def test_merge_shards_equals_single_run(tmp_path, monkeypatch):
    monkeypatch.setattr("drivepipe.cache.lmdb_store.COMMIT_EVERY", 2)  # several transactions, split across shards
    cfg = small_config()
    results = _results(cfg, logs=("log_a-x", "log_a", "log_b"), per_log=3)
    single = _hashes(_write(cfg, tmp_path / "single", results))
    _write(cfg, tmp_path / "s0", [results[1]])
    _write(cfg, tmp_path / "s1", [results[0], results[2]])
    merge_shards([tmp_path / "s1", tmp_path / "s0"], tmp_path / "merged")
    assert _hashes(tmp_path / "merged") == single


def test_exception_mid_write_leaves_nothing(tmp_path):
    cfg = small_config()
    out = tmp_path / "cache"
    _write(cfg, out)
    before = _hashes(out)
    bad = _results(cfg)
    bad[1].error = ("log_b/0000000000000002", "sample failed: boom")
    with pytest.raises(DataError, match="0000000000000002"):
        _write(cfg, out, bad)
    assert _hashes(out) == before and not (tmp_path / "cache.tmp").exists()  # old cache untouched
    with pytest.raises(RuntimeError):
        with LmdbWriter(tmp_path / "fresh") as w:
            w.put_many([("a", b"1")])
            raise RuntimeError("interrupted")
    assert not (tmp_path / "fresh").exists() and not (tmp_path / "fresh.tmp").exists()


def test_sigkill_mid_write_leaves_no_cache(tmp_path):
    out = tmp_path / "cache"
    script = textwrap.dedent(f"""
        import sys, time
        from drivepipe.cache.lmdb_store import LmdbWriter
        w = LmdbWriter({str(out)!r})
        for i in range(100000):
            w.put_many([(f"k{{i:08d}}", bytes(1000))])
            if i == 100:
                print("ready", flush=True)
            time.sleep(0.001)
        w.finish({{}})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not out.exists() and (tmp_path / "cache.tmp").exists()
    with LmdbWriter(out) as w:  # the next run removes the stale tmp dir
        w.put_many([("a", b"1")])
        w.finish({"count": 1})
    assert sorted(os.listdir(out)) == ["data.mdb"] and not (tmp_path / "cache.tmp").exists()


def _read_points(args) -> int:
    ds, index = args
    return len(ds[index]["points"])


def test_reader_survives_fork_and_shares_env(tmp_path):
    import multiprocessing as mp

    cfg = small_config()
    cache = _write(cfg, tmp_path / "cache")
    train, val = CacheDataset(cache, cfg, "train"), CacheDataset(cache, cfg, "val")  # same env, one process
    expected = [len(train[0]["points"]), len(val[0]["points"])]
    with mp.get_context("fork").Pool(1) as pool:  # the parent held the env open: closed before fork, reopened
        got = pool.map(_read_points, [(train, 0), (val, 0)])
    assert got == expected and len(train[1]["points"]) == train.num_points(1)


def test_header_content_hash_follows_the_sample_bytes(tmp_path):
    """The header (which the trainer hashes to decide resume vs fresh start) changes when any sample's bytes do,
    even with the same params and keys."""
    import json

    import lmdb

    from drivepipe.cache.lmdb_store import META_KEY, LmdbWriter

    headers = []
    for name, value in (("a", b"v1"), ("b", b"v1"), ("c", b"v2")):
        with LmdbWriter(tmp_path / name) as writer:
            writer.put("log/0000000000000001", value)
            writer.finish({"schema_version": 1})
        env = lmdb.open(str(tmp_path / name), readonly=True, lock=False)
        with env.begin() as txn:
            headers.append(json.loads(txn.get(META_KEY))["content_hash"])
        env.close()
    assert headers[0] == headers[1] != headers[2]
