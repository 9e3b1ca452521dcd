"""Checkpoint contents, atomic saves, corruption detection, top-K pruning and fresh start on config change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _standin import StandinModel, standin_builders, tiny_cfg

from drivepipe.train import checkpoint as ckpt
from drivepipe.train.trainer import fit


def _fit(tmp: Path, **train) -> dict:
    torch.set_num_threads(1)
    return fit(tiny_cfg(**train), tmp / "cache", tmp / "ckpt", tmp / "reports", builders=standin_builders())


def test_checkpoint_contents_load_weights_only(tmp_path: Path) -> None:
    _fit(tmp_path, epochs=2)
    exp = tmp_path / "ckpt" / "default"
    latest = ckpt.resolve_checkpoint(exp, "latest")
    assert latest.name == "step_00000012" and ckpt.resolve_checkpoint(exp, "best").parent == exp
    assert {p.name for p in latest.iterdir()} == {"model.pt", "train_state.pt", "resolved_config.json", "meta.json"}
    assert not (exp / "latest").readlink().is_absolute()
    meta = json.loads((latest / "meta.json").read_text())
    assert {"git_commit", "manifest_hash", "header_hash", "config_hash", "metrics", "sha256", "step"} <= set(meta)
    assert meta["manifest_hash"] == "manifest-1" and "val/score" in meta["metrics"]
    assert json.loads((latest / "resolved_config.json").read_text())["train"]["epochs"] == 2
    state = torch.load(latest / "train_state.pt", weights_only=True)
    assert {"optimizer", "scheduler", "scaler", "loss_module", "progress", "rng"} <= set(state)
    assert {"step", "micro_step", "epoch", "batch_in_epoch"} <= set(state["progress"])
    assert {"python", "numpy", "torch", "cuda", "loader"} <= set(state["rng"])
    assert state["progress"]["step"] == 12 and state["progress"]["epoch"] == 2
    weights, meta2 = ckpt.load_model_weights(latest)
    StandinModel(tiny_cfg()).load_state_dict(weights, strict=True)
    assert meta2 == meta
    reports = tmp_path / "reports"
    assert (reports / "summary.json").is_file() and (reports / "live" / "metrics.json").is_file()


def _save(cp: ckpt.Checkpointer, step: int, score: float = 0.0) -> Path:
    model = StandinModel(tiny_cfg())
    return cp.save(step, model.state_dict(), {"progress": {"step": step}}, {"val/score": score})


def test_failed_save_leaves_previous_checkpoint_and_link(tmp_path: Path, monkeypatch) -> None:
    cp = ckpt.Checkpointer(tmp_path, tiny_cfg(), {"manifest_hash": "m", "header_hash": "h"})
    _save(cp, 1)
    real_save = torch.save

    def broken_save(obj, path, *a, **k):
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        _save(cp, 2)
    assert ckpt.resolve_checkpoint(tmp_path, "latest").name == "step_00000001"
    assert not (tmp_path / "step_00000002").exists() and not (tmp_path / "step_00000002.tmp").exists()
    ckpt.load_model_weights(tmp_path / "latest")
    monkeypatch.setattr(torch, "save", real_save)
    _save(cp, 3)
    assert ckpt.resolve_checkpoint(tmp_path, "latest").name == "step_00000003"
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_corrupted_model_is_refused(tmp_path: Path) -> None:
    cp = ckpt.Checkpointer(tmp_path, tiny_cfg(), {})
    path = _save(cp, 5) / "model.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match=r"model\.pt.*does not match meta\.json.*corrupted"):
        ckpt.load_model_weights(tmp_path / "latest")


def test_keep_top_k_plus_latest_and_best(tmp_path: Path) -> None:
    cp = ckpt.Checkpointer(tmp_path, tiny_cfg(keep_top_k=2), {})
    for step, score in [(1, 0.1), (2, 0.5), (3, 0.3), (4, 0.2), (5, 0.05)]:
        _save(cp, step, score)
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_00000002", "step_00000003", "step_00000005"]
    assert ckpt.resolve_checkpoint(tmp_path, "best").name == "step_00000002"
    assert ckpt.resolve_checkpoint(tmp_path, "latest").name == "step_00000005"


def test_config_change_starts_fresh_and_removes_stale(tmp_path: Path) -> None:
    _fit(tmp_path, epochs=1, lr=0.01)
    exp = tmp_path / "ckpt" / "default"
    old_hash = ckpt.read_meta(exp / "latest")["config_hash"]
    (exp / "step_00000006" / "stale_marker").write_text("x")
    summary = _fit(tmp_path, epochs=1, lr=0.02)
    assert summary["step"] == 6  # trained from scratch, not resumed
    metas = [ckpt.read_meta(p) for p in exp.glob("step_*")]
    assert metas and all(m["config_hash"] != old_hash for m in metas)
    assert not (exp / "step_00000006" / "stale_marker").exists()
    history = (tmp_path / "reports" / "live" / "plots" / "metrics" / "loss" / "total.tsv").read_text().splitlines()
    assert len(history) == 1 + 6  # the dvclive history was reset, not appended to
    # a cosmetic knob does not invalidate the checkpoint: nothing left to train, nothing removed
    assert _fit(tmp_path, epochs=1, lr=0.02, log_every_steps=3, keep_top_k=1)["step"] == 6
    assert (exp / "step_00000006").is_dir()


def test_resolve_missing_checkpoint_is_clear(tmp_path: Path) -> None:
    with pytest.raises(ckpt.CheckpointError, match="no 'best' checkpoint"):
        ckpt.resolve_checkpoint(tmp_path, "best")
