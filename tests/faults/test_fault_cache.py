"""Fault case 3 of issue 16: a damaged LMDB cache. A truncated data.mdb used to kill train / evaluate /
show-sample with SIGBUS and no message; a flipped byte in a value surfaced as a JPEG size error or NaN metrics.
show-sample runs in a subprocess, so a SIGBUS would show as a negative return code instead of killing pytest."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _faults import error_line, run_cli, tree_digest, write_params

from drivepipe.cache.lmdb_store import LmdbReader
from drivepipe.cli.main import main
from drivepipe.config import to_dict
from drivepipe.errors import DataError

pytestmark = pytest.mark.slow


@pytest.fixture()
def cache(tiny_trained: dict, tmp_path: Path) -> Path:
    out = tmp_path / "cache"
    shutil.copytree(tiny_trained["cache"], out)
    return out


def _commands(cache: Path, tiny_trained: dict, tmp_path: Path) -> list[list]:
    params = write_params(tmp_path / "params.yaml", to_dict(tiny_trained["cfg"]))
    return [["show-sample", "--cache", cache, "--index", "0", "--out", tmp_path / "s.png"],
            ["evaluate", "--params", params, "--cache", cache, "--checkpoints", tiny_trained["models"],
             "--out", tmp_path / "ev"],
            ["train", "--params", params, "--cache", cache, "--checkpoints", tmp_path / "ck", "--models",
             tmp_path / "models", "--reports", tmp_path / "rt"]]


def _run(cmd: list, in_process: bool, capsys) -> tuple[int, str]:
    """show-sample runs in a subprocess (a SIGBUS there shows as a negative return code instead of killing pytest);
    evaluate and train in this process (their imports are slow to repeat)."""
    if not in_process:
        proc = run_cli(*cmd)
        return proc.returncode, error_line(proc.stderr)
    rc = main([str(c) for c in cmd])
    return rc, error_line(capsys.readouterr().err)


def test_truncated_data_mdb_is_named_not_sigbus(cache: Path, tiny_trained: dict, tmp_path: Path, capsys) -> None:
    data = cache / "data.mdb"
    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size // 2)  # e.g. a copy or a DVC checkout cut short
    models_before = tree_digest(tiny_trained["models"])
    for i, cmd in enumerate(_commands(cache, tiny_trained, tmp_path)):
        rc, line = _run(cmd, i > 0, capsys)
        assert rc == 2, (cmd[0], rc, line)
        assert "data.mdb: truncated" in line and "run: dvc repro preprocess" in line, line
    assert not (tmp_path / "ck").exists() and not (tmp_path / "models").exists()
    assert tree_digest(tiny_trained["models"]) == models_before


def _flip_one_byte(cache: Path, key: str) -> None:
    """Bit rot inside one stored value (written back through LMDB, so the B-tree itself stays sound)."""
    import lmdb

    env = lmdb.open(str(cache), subdir=True, lock=False)
    with env.begin(write=True) as txn:
        value = bytearray(txn.get(key.encode()))
        value[len(value) // 2] ^= 0x10
        txn.put(key.encode(), bytes(value))
    env.close()


def test_corrupt_value_names_the_key(cache: Path, tiny_trained: dict, tmp_path: Path, capsys) -> None:
    reader = LmdbReader(cache)
    key = reader.keys("val")[0]
    assert reader.verify() == len(reader)  # the full check passes on the good cache
    reader.close()
    _flip_one_byte(cache, key)
    with pytest.raises(DataError, match=f"{key}: checksum mismatch"):
        LmdbReader(cache).verify()
    proc = run_cli("verify-data", "--cache", cache)  # the full check on request
    assert proc.returncode == 2 and key in error_line(proc.stderr), proc.stderr[-2000:]
    show, evaluate, _ = _commands(cache, tiny_trained, tmp_path)
    for i, cmd in enumerate((show[:3] + ["--key", key, *show[5:]], evaluate)):
        rc, line = _run(cmd, i > 0, capsys)
        assert rc == 2 and key in line and "checksum mismatch" in line, line
        assert "run: dvc repro preprocess" in line, line
    assert not (tmp_path / "ev" / "metrics.json").exists(), "no metrics from a corrupt cache"


def test_corrupt_value_read_in_a_loader_worker_is_still_one_line(cache: Path, tiny_trained: dict) -> None:
    """torch re-raises a worker's exception from its formatted traceback; the CLI still prints one line."""
    import torch

    from drivepipe.data.dataset import CacheDataset
    from drivepipe.errors import one_line
    from drivepipe.sample import collate

    key = LmdbReader(cache).keys("train")[0]
    LmdbReader(cache).close()
    _flip_one_byte(cache, key)
    dataset = CacheDataset(cache, tiny_trained["cfg"], "train")
    loader = torch.utils.data.DataLoader(dataset, batch_size=len(dataset), num_workers=1, collate_fn=collate)
    with pytest.raises(DataError) as info:
        next(iter(loader))
    line = one_line(info.value)
    assert line.startswith(f"{cache}:{key}: checksum mismatch") and line.endswith("run: dvc repro preprocess"), line
