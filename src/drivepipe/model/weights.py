"""Reading trained weights: the checkpoint directories that `train/checkpoint.py` writes (layout there) and the
exported `models/<experiment>/{best,latest}`. Used by evaluate, the closed-loop agent and the trainer's resume, so
that the evaluation stages do not depend on the training package.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from drivepipe.config import Config
from drivepipe.errors import CheckpointError, NonFiniteError
from drivepipe.utils.io import sha256_file

if TYPE_CHECKING:
    from drivepipe.model.model import DrivingModel


def resolve_checkpoint(exp_dir: str | Path, which: Literal["best", "latest"] = "latest") -> Path:
    """The checkpoint directory `exp_dir/<which>` points to; raises CheckpointError when there is none."""
    link = Path(exp_dir) / which
    if not link.exists():
        raise CheckpointError(f"{link}: no '{which}' checkpoint (run `dvc repro train` first)")
    return link.resolve()


def read_meta(ckpt_dir: str | Path) -> dict[str, Any]:
    path = Path(ckpt_dir) / "meta.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; the checkpoint is incomplete")
    return json.loads(path.read_text())


def verified_load(ckpt_dir: Path, name: str, meta: dict[str, Any]) -> Any:
    path = ckpt_dir / name
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; the checkpoint is incomplete")
    expected = meta.get("sha256", {}).get(name)
    actual = sha256_file(path)
    if expected != actual:
        raise CheckpointError(f"{path}: sha256 {actual[:12]}… does not match meta.json ({str(expected)[:12]}…); "
                              "the file is corrupted or was modified — refusing to load it")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_model_weights(ckpt_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(model state_dict, meta dict) of a checkpoint directory, after checking model.pt's sha256 and that every
    weight is finite (NaN weights would otherwise fail deep inside the metrics, e.g. in shapely)."""
    ckpt_dir = Path(ckpt_dir)
    meta = read_meta(ckpt_dir)
    state = verified_load(ckpt_dir, "model.pt", meta)
    check_finite_weights(state, str(ckpt_dir / "model.pt"))
    return state, meta


def check_finite_weights(state: dict[str, Any], where: str) -> None:
    """Raise NonFiniteError when any floating tensor of a model state_dict holds NaN or infinity."""
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise NonFiniteError(f"{where}: {len(bad)} of {len(state)} weight tensors hold NaN/inf (first: {bad[0]}); "
                             "training diverged: lower train.lr or raise train.warmup_steps, and check the loss weights")


def load_trained_model(cfg: Config, ckpt_root: Path, which: str) -> tuple[DrivingModel, Path, dict]:
    """Build the model from the config and load `<ckpt_root>/<train.experiment>/<which>` (weights_only, strict,
    hash-checked); returns (model in eval mode, checkpoint dir, meta)."""
    from drivepipe.model.model import build_model

    ckpt = resolve_checkpoint(Path(ckpt_root) / cfg.train.experiment, which)  # type: ignore[arg-type]
    state, meta = load_model_weights(ckpt)
    model = build_model(cfg)
    model.load_state_dict(state, strict=True)
    return model.eval(), ckpt, meta
