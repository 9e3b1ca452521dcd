"""Two-process gloo training through torchrun; rank 0 alone writes the checkpoint and the reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from drivepipe.train.checkpoint import load_train_state, resolve_checkpoint

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("DVCLIVE_TEST", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "_standin.py"), str(tmp_path / "cache"), str(tmp_path / "ckpt"), str(tmp_path / "reports"),
           json.dumps({"epochs": 1})]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    exp = tmp_path / "ckpt" / "default"
    # 12 samples over 2 ranks, batch 2 -> 3 optimizer steps per epoch; one checkpoint, written once
    assert [p.name for p in exp.glob("step_*")] == ["step_00000003"]
    latest = resolve_checkpoint(exp, "latest")
    state = load_train_state(latest)
    assert state["world_size"] == 2 and state["progress"]["step"] == 3
    assert torch.isfinite(state["loss_module"]["log_var"]).all()
    assert json.loads((tmp_path / "reports" / "summary.json").read_text())["step"] == 3
