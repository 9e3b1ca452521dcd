"""Fault cases 1 (the non-finite guard), 7 and 10 of issue 16: a diverging run, checkpoints with NaN weights, a
truncated train_state.pt on resume, a missing checkpoint, and a disk that fills up during a checkpoint save or
preprocess. Each ends with one line on stderr, the documented exit code, and nothing lost or half-written.

Disk full: a real, small tmpfs is mounted for the run (needs root). Without root, the checkpoint case simulates the
OS boundary (torch.save's "unexpected pos" error, no free space) and the preprocess case is skipped, saying why."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from _faults import error_line, tree_digest

from drivepipe.cli.main import main
from drivepipe.config import to_dict
from drivepipe.errors import EXIT_CHECKPOINT, EXIT_DISK_FULL, EXIT_NONFINITE, NonFiniteError
from drivepipe.train.checkpoint import Checkpointer
from drivepipe.utils.io import sha256_file

pytestmark = pytest.mark.slow


def _params(tiny_trained: dict, tmp_path: Path, **sections: dict) -> Path:
    import yaml

    params = to_dict(tiny_trained["cfg"])
    for name, values in sections.items():
        params[name].update(values)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _train(params: Path, cache: Path, root: Path) -> int:
    return main(["train", "--params", str(params), "--cache", str(cache), "--checkpoints", str(root / "ck"),
                 "--models", str(root / "models"), "--reports", str(root / "rt")])


@pytest.mark.parametrize(("in_row", "message"), [(2, "2 non-finite losses in a row"),
                                                  (1000, "no optimizer step succeeded")])
def test_diverging_training_stops_with_one_line_and_saves_nothing(tiny_trained: dict, tmp_path: Path, capsys,
                                                                  in_row: int, message: str) -> None:
    # finite, so the params pass; the weighted loss overflows float32 to inf on every step. With a limit larger
    # than the run, every step is voided: the run used to end "successfully" with an untrained model.
    params = _params(tiny_trained, tmp_path, loss={"det_weight": 1e38}, train={"max_nonfinite_in_row": in_row})
    rc = _train(params, tiny_trained["cache"], tmp_path)
    line = error_line(capsys.readouterr().err)
    assert rc == EXIT_NONFINITE and message in line and "train.lr" in line, line
    assert not list((tmp_path / "ck").rglob("model.pt")) and not (tmp_path / "models").exists()


def test_checkpoint_with_nan_weights_is_never_saved(tiny_trained: dict, tmp_path: Path) -> None:
    cfg = tiny_trained["cfg"]
    cp = Checkpointer(tmp_path, cfg, {"manifest_hash": "m", "header_hash": "h"})
    state = {"w": torch.ones(3), "b": torch.tensor([0.0, float("nan")])}
    cp.save(1, {"w": torch.ones(3), "b": torch.zeros(2)}, {"x": torch.zeros(1)}, {})
    with pytest.raises(NonFiniteError, match=r"step_00000002 \(not saved\): 1 of 2 weight tensors hold NaN/inf"):
        cp.save(2, state, {"x": torch.zeros(1)}, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "latest", "step_00000001"]


def _poison(ckpt: Path) -> None:
    """All-NaN weights with a matching sha256 in meta.json (what a diverged run saved before the guard)."""
    state = torch.load(ckpt / "model.pt", weights_only=True)
    torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()},
               ckpt / "model.pt")
    meta = json.loads((ckpt / "meta.json").read_text())
    meta["sha256"]["model.pt"] = sha256_file(ckpt / "model.pt")
    (ckpt / "meta.json").write_text(json.dumps(meta))


def test_evaluate_refuses_nan_weights(tiny_trained: dict, tmp_path: Path, capsys) -> None:
    models = tmp_path / "models"
    shutil.copytree(tiny_trained["models"], models)
    for which in ("best", "latest"):
        _poison(models / tiny_trained["cfg"].train.experiment / which)
    rc = main(["evaluate", "--params", str(_params(tiny_trained, tmp_path)), "--cache", str(tiny_trained["cache"]),
               "--checkpoints", str(models), "--out", str(tmp_path / "ev")])
    line = error_line(capsys.readouterr().err)
    assert rc == EXIT_NONFINITE and "model.pt" in line and "hold NaN/inf" in line, line
    assert not (tmp_path / "ev" / "metrics.json").exists()


def test_nan_predictions_are_named(tiny_trained: dict) -> None:
    from drivepipe.data.dataset import CacheDataset
    from drivepipe.evaluate.offline import evaluate_model
    from drivepipe.model.model import build_model
    from drivepipe.sample import collate

    cfg = tiny_trained["cfg"]
    model = build_model(cfg)
    # the detection heatmap turns NaN, as overflowing inputs would make it
    model.register_forward_hook(lambda m, i, out: {**out, "det.heatmap": out["det.heatmap"] * float("nan")})
    loader = torch.utils.data.DataLoader(CacheDataset(tiny_trained["cache"], cfg, "val"), batch_size=2,
                                         collate_fn=collate)
    with pytest.raises(NonFiniteError, match=r"predictions \['det.heatmap'\] hold NaN/inf for samples"):
        evaluate_model(model, loader, cfg)


def test_missing_checkpoint_is_one_line(tiny_trained: dict, tmp_path: Path, capsys) -> None:
    rc = main(["evaluate", "--params", str(_params(tiny_trained, tmp_path)), "--cache", str(tiny_trained["cache"]),
               "--checkpoints", str(tmp_path / "none"), "--out", str(tmp_path / "ev")])
    line = error_line(capsys.readouterr().err)
    assert rc == EXIT_CHECKPOINT and "no 'best' checkpoint" in line and "dvc repro train" in line, line


def test_truncated_train_state_on_resume_offers_the_previous_step(tiny_trained: dict, tmp_path: Path,
                                                                  capsys) -> None:
    root = tmp_path / "ck"
    shutil.copytree(tiny_trained["checkpoints"], root, symlinks=True)
    exp = root / tiny_trained["cfg"].train.experiment
    latest = (exp / "latest").resolve()
    shutil.copytree(latest, exp / "step_00000002")  # an older checkpoint that is still intact
    state = latest / "train_state.pt"
    with open(state, "r+b") as f:
        f.truncate(state.stat().st_size // 3)  # e.g. copied back from a full disk
    before = tree_digest(root)
    rc = _train(_params(tiny_trained, tmp_path), tiny_trained["cache"], tmp_path)
    line = error_line(capsys.readouterr().err)
    assert rc == EXIT_CHECKPOINT and "train_state.pt" in line and "does not match meta.json" in line, line
    assert f"ln -sfn step_00000002 {exp / 'latest'}" in line, line
    assert tree_digest(root) == before, "a failed resume must not delete or rewrite checkpoints"


def test_damaged_meta_json_on_resume_deletes_nothing(tiny_trained: dict, tmp_path: Path, capsys) -> None:
    root = tmp_path / "ck"
    shutil.copytree(tiny_trained["checkpoints"], root, symlinks=True)
    meta = root / tiny_trained["cfg"].train.experiment / "latest" / "meta.json"
    meta.write_text(meta.read_text()[:40])  # cut short
    before = tree_digest(root)
    rc = _train(_params(tiny_trained, tmp_path), tiny_trained["cache"], tmp_path)
    line = error_line(capsys.readouterr().err)
    assert rc == EXIT_CHECKPOINT and "meta.json unreadable" in line and "to start over" in line, line
    assert tree_digest(root) == before, "a damaged checkpoint was deleted instead of reported"


# ------------------------------------------------------------------------------------------------- disk full
@pytest.fixture()
def small_disk(tmp_path: Path):
    """A tmpfs of 300 KiB: smaller than one tiny checkpoint (~600 KB) and the tiny cache (~430 KB)."""
    mnt = tmp_path / "small"
    problem = _mount_small_tmpfs(mnt)
    if problem:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {problem}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def _mount_small_tmpfs(mnt: Path) -> str:
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mnt)], capture_output=True)
    return "" if proc.returncode == 0 else proc.stderr.decode().strip() or "mount failed"


@pytest.fixture()
def full_disk_on_save(tmp_path: Path, monkeypatch):
    """The small tmpfs where it can be mounted; elsewhere (CI without root) the OS boundary is simulated: torch.save
    fails the way it does on a full disk ("unexpected pos") and the file system reports no free space."""
    mnt = tmp_path / "small"
    if not _mount_small_tmpfs(mnt):
        yield mnt
        subprocess.run(["umount", str(mnt)], check=True)
        return

    def full_save(obj, path, *args, **kwargs) -> None:
        Path(path).write_bytes(b"PK\x03\x04 partial")
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")
    import drivepipe.errors

    monkeypatch.setattr(torch, "save", full_save)
    monkeypatch.setattr(drivepipe.errors, "_free_mb", lambda path: 0)
    yield mnt


def test_disk_full_during_checkpoint_save(tiny_trained: dict, tmp_path: Path, full_disk_on_save: Path,
                                          capsys) -> None:
    small_disk = full_disk_on_save
    params = _params(tiny_trained, tmp_path, train={"max_steps": 1})  # save right after the first step
    rc = main(["train", "--params", str(params), "--cache", str(tiny_trained["cache"]),
               "--checkpoints", str(small_disk / "ck"), "--models", str(tmp_path / "models"),
               "--reports", str(tmp_path / "rt")])
    line = error_line(capsys.readouterr().err)
    assert rc == EXIT_DISK_FULL and f"no space left on {small_disk / 'ck'}" in line and "need ~" in line, line
    assert not list(small_disk.rglob("step_*")), "a half-written checkpoint was left behind"
    assert not (tmp_path / "models").exists()


def test_disk_full_during_preprocess(tiny_trained: dict, tmp_path: Path, small_disk: Path, capsys) -> None:
    rc = main(["preprocess", "--params", str(_params(tiny_trained, tmp_path)), "--data",
               str(tiny_trained["data"]), "--out", str(small_disk / "cache"), "--report", str(tmp_path / "p.json")])
    line = error_line(capsys.readouterr().err)
    assert rc == EXIT_DISK_FULL and f"no space left on {small_disk / 'cache.tmp'}" in line and "need ~" in line, line
    assert not list(small_disk.iterdir()), "a half-written cache was left behind"
