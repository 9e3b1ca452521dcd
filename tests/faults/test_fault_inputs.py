"""Fault cases 2, 4 and 8 of issue 16 on a copy of the session's synthetic nuPlan dataset: a calibration pickle
bomb, a JPEG cut mid-stream that still ends with FF D9, and maps missing so that samples (or whole splits) are lost.
Each runs the real command and checks its one-line error, its exit code and that no cache was written."""

from __future__ import annotations

import shutil
import sqlite3
import struct
from collections import Counter
from pathlib import Path

import pytest
from _faults import error_line, run_cli, tree_digest, write_params

from drivepipe.config import to_dict
from drivepipe.errors import DataError
from drivepipe.preprocess.run import check_skip_policy

pytestmark = pytest.mark.slow


def _memo_bomb(levels: int) -> bytes:
    """A protocol-5 pickle of nested lists that share one memoised child per level: ~8 bytes per level, yet
    flattening it yields 2**levels numbers (the 168-byte case of the fault run)."""
    b = bytearray(b"\x80\x05]G" + struct.pack(">d", 1.0) + b"a\x94")
    for i in range(levels):
        b += b"]h" + bytes([i]) + b"ah" + bytes([i]) + b"a\x94"
    return bytes(b + b".")


@pytest.fixture()
def dataset(synthetic_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "nuplan_mini"
    shutil.copytree(synthetic_root, root)
    return root


@pytest.fixture()
def params(tiny_trained: dict, tmp_path: Path) -> dict:
    return to_dict(tiny_trained["cfg"])


def _first_db(root: Path) -> Path:
    return sorted(root.rglob("*.db"))[0]


def _preprocess(root: Path, params: dict, tmp_path: Path) -> tuple[int, str, Path]:
    out = tmp_path / "cache"
    proc = run_cli("preprocess", "--params", write_params(tmp_path / "params.yaml", params), "--data", root,
                   "--out", out, "--report", tmp_path / "preprocess.json")
    return proc.returncode, proc.stderr, out


@pytest.mark.parametrize("blob", [_memo_bomb(28), b"\x80\x05" + b"]" * 100_000 + b"a" * 99_999 + b"."],
                         ids=["memo-bomb", "100k-deep"])
def test_calibration_pickle_bomb_is_a_clear_error(dataset: Path, params: dict, tmp_path: Path, blob: bytes) -> None:
    db = _first_db(dataset)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE camera SET intrinsic = ? WHERE channel = 'CAM_F0'", (blob,))
    proc = run_cli("verify-data", "--root", dataset, "--no-decode")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "camera.CAM_F0.intrinsic" in proc.stdout and "calibration pickle" in proc.stdout, proc.stdout[-2000:]
    if len(blob) > 1000:
        return  # the size bound answers before any decoding; the memo bomb also goes through preprocess
    params["preprocess"]["failure_policy"] = "fail"
    rc, err, out = _preprocess(dataset, params, tmp_path)
    line = error_line(err)
    assert rc == 2 and "calibration pickle" in line and db.name in line, line
    assert not out.exists() and not out.with_name("cache.tmp").exists()


def test_jpeg_cut_mid_stream_with_end_marker_is_corrupt(dataset: Path, params: dict, tmp_path: Path) -> None:
    jpeg = sorted((dataset / "nuplan-v1.1" / "sensor_blobs").rglob("CAM_F0/*.jpg"))[3]
    data = jpeg.read_bytes()
    jpeg.write_bytes(data[: len(data) // 2] + b"\xff\xd9")  # libjpeg decodes this with a grey lower half
    proc = run_cli("verify-data", "--root", dataset)
    assert proc.returncode == 1 and jpeg.name in proc.stdout and "JPEG is corrupt" in proc.stdout, proc.stdout[-2000:]
    params["preprocess"]["failure_policy"] = "fail"
    rc, err, out = _preprocess(dataset, params, tmp_path)
    line = error_line(err)
    assert rc == 2 and "Corrupt JPEG data" in line, line
    assert not out.exists()


def test_missing_map_empties_a_split_and_keeps_the_old_cache(dataset: Path, params: dict, tmp_path: Path,
                                                              tiny_trained: dict) -> None:
    out = tmp_path / "cache"
    shutil.copytree(tiny_trained["cache"], out)  # the cache of an earlier good run
    before = tree_digest(out)
    gpkg = next((dataset / "maps" / "sg-one-north").rglob("map.gpkg"))  # one of the two locations of the logs
    gpkg.unlink()  # a whole location loses its map: every one of its samples is skipped, a split ends up empty
    params["preprocess"]["max_skipped_fraction"] = 1.0  # even a lenient threshold never allows an empty split
    rc, err, _ = _preprocess(dataset, params, tmp_path)
    line = error_line(err)
    assert rc == 2 and "is empty: all its samples were skipped" in line and "map file for location" in line, line
    assert tree_digest(out) == before and not out.with_name("cache.tmp").exists(), "the good cache was touched"


def test_skip_summary_and_empty_val_split() -> None:
    infos = [{"split": "train"}] * 40
    skipped = Counter({"DataError: map.gpkg: missing": 3})
    with pytest.raises(DataError, match="split 'val' is empty"):
        check_skip_policy(infos, skipped, {"train", "val"}, 1.0, Path("data"))
    check_skip_policy(infos, skipped, {"train"}, 0.1, Path("data"))  # 3 of 43 skipped: within 10 %
    with pytest.raises(DataError, match="3 of 43 samples skipped"):
        check_skip_policy(infos, skipped, {"train"}, 0.05, Path("data"))
    from drivepipe.preprocess.run import skip_summary

    text = skip_summary({"skipped": {"DataError: map.gpkg: missing": 3, "log failed: x": 5}, "skipped_total": 8})
    assert text.splitlines() == ["skipped 8 samples:", "  3 x DataError: map.gpkg: missing", "  5 x log failed: x"]
