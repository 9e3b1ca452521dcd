"""Training loop: bitwise resume (in-process and after SIGKILL), non-finite guard, AMP fallback, closed-loop hook."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _standin import standin_builders, tiny_cfg

from drivepipe.train.checkpoint import load_model_weights, load_train_state, resolve_checkpoint
from drivepipe.train.trainer import fit

HERE = Path(__file__).resolve().parent


def _fit(root: Path, closed_loop=None, **train) -> dict:
    torch.set_num_threads(1)
    return fit(tiny_cfg(**train), root / "cache", root / "ckpt", root / "reports", builders=standin_builders(),
               closed_loop=closed_loop)


def _final(root: Path) -> tuple[dict, dict]:
    latest = resolve_checkpoint(root / "ckpt" / "default", "latest")
    return load_model_weights(latest)[0], load_train_state(latest)


def _assert_same_run(a: Path, b: Path) -> None:
    (wa, sa), (wb, sb) = _final(a), _final(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ea, eb = sa["optimizer"]["state"], sb["optimizer"]["state"]
    assert all(torch.equal(ea[i][k], eb[i][k]) for i in ea for k in ea[i])
    assert torch.equal(sa["loss_module"]["log_var"], sb["loss_module"]["log_var"])
    assert sa["progress"] == sb["progress"]
    tsv = Path("live/plots/metrics/loss/total.tsv")
    rows = [[r.split("\t")[1:] for r in (d / "reports" / tsv).read_text().splitlines()] for d in (a, b)]
    assert rows[0] == rows[1]  # same (step, loss) history, no duplicated steps after resume


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 3-epoch run (18 optimizer steps, augmentation and dropout on)."""
    root = tmp_path_factory.mktemp("reference")
    assert _fit(root)["step"] == 18
    return root


def test_resume_mid_epoch_is_bitwise_identical(reference: Path, tmp_path: Path) -> None:
    assert _fit(tmp_path, max_steps=7)["step"] == 7  # stops inside epoch 2 and saves there
    assert load_train_state(tmp_path / "ckpt" / "default" / "latest")["progress"]["batch_in_epoch"] == 1
    assert _fit(tmp_path)["step"] == 18  # max_steps is not part of the resume hash
    _assert_same_run(reference, tmp_path)


def test_sigkill_then_rerun_is_bitwise_identical(reference: Path, tmp_path: Path) -> None:
    exp = tmp_path / "ckpt" / "default"
    env = {**os.environ, "STANDIN_BLOCK_DIR": str(exp), "OMP_NUM_THREADS": "1"}
    env.pop("DVCLIVE_TEST", None)
    proc = subprocess.Popen([sys.executable, str(HERE / "_standin.py"), str(tmp_path / "cache"),
                             str(tmp_path / "ckpt"), str(tmp_path / "reports"), "{}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not (exp / "latest").exists():
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 60 s"
        time.sleep(0.05)
    time.sleep(0.5)  # let it reach the next epoch's first (blocking) read
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert resolve_checkpoint(exp, "latest").name == "step_00000006"
    assert _fit(tmp_path)["step"] == 18
    _assert_same_run(reference, tmp_path)


def test_nonfinite_batch_is_skipped_and_counted(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("STANDIN_NAN", "3")
    summary = _fit(tmp_path, epochs=1)
    assert summary["nonfinite_total"] == 1 and summary["step"] == 5 and summary["micro_step"] == 6
    assert json.loads((tmp_path / "reports" / "summary.json").read_text())["nonfinite_total"] == 1
    weights, _ = _final(tmp_path)
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


def test_nonfinite_in_a_row_stops_with_a_clear_message(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("STANDIN_NAN", "all")
    with pytest.raises(RuntimeError, match=r"3 non-finite losses in a row .*Check the learning rate"):
        _fit(tmp_path, epochs=1, max_nonfinite_in_row=3)


def test_fp16_on_cpu_falls_back_with_warning(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="drivepipe.train.trainer"):
        assert _fit(tmp_path, epochs=1, max_steps=2, amp="fp16")["step"] == 2
    assert "fp16 is not available" in caplog.text


def test_closed_loop_callback_is_called_per_checkpoint(tmp_path: Path) -> None:
    calls = []
    _fit(tmp_path, closed_loop=lambda cfg, ckpt_dir, out_dir: calls.append((Path(ckpt_dir), Path(out_dir))),
         epochs=2, save_every_epochs=2, closed_loop_every_epochs=1)
    assert [c[0].name for c in calls] == ["step_00000006", "step_00000012"]
    assert calls[0][1] == calls[0][0] / "closed_loop"
