"""Self-describing, atomic, resumable checkpoints.

Layout of `checkpoints/<experiment>/`:
    step_00000120/            one checkpoint (optimizer step 120)
        model.pt              model state_dict (tensors only)
        train_state.pt        optimizer, scheduler, GradScaler, loss module, counters, RNG states (weights_only-safe)
        resolved_config.json  the full config the run used
        meta.json             git commit, data hashes, config hash, metrics at save, sha256 of both .pt files
    latest -> step_00000120   relative symlinks, replaced atomically
    best   -> step_00000080
A checkpoint is written into `step_XXXXXXXX.tmp/`, then renamed; a crash mid-save leaves the previous checkpoint
and links untouched, and the stale `.tmp` directory is removed by the next save.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drivepipe.config import Config, config_hash, to_dict
from drivepipe.errors import DiskFullError, is_disk_full
from drivepipe.model.weights import (  # noqa: F401  (re-exported: the checkpoint API)
    CheckpointError,
    check_finite_weights,
    load_model_weights,
    read_meta,
    resolve_checkpoint,
    verified_load,
)
from drivepipe.utils.io import atomic_write_json, sha256_file

log = logging.getLogger(__name__)

# keys that do not change the trained weights, left out of the resume hash (the data identity is covered by the
# cache header and manifest hashes; max_steps is a cap, so a capped run can be continued with a larger one)
COSMETIC_KEYS = {
    "data.synthetic": ("workers",),
    "data.nuplan": ("download_dir", "timeout_s", "retries", "max_extract_gb", "max_extract_ratio"),
    "preprocess": ("workers", "shard_index", "shard_count", "failure_policy", "max_skipped_fraction"),
    "train": ("experiment", "workers", "pin_memory", "persistent_workers", "prefetch_factor", "log_every_steps",
              "save_every_epochs", "keep_top_k", "max_nonfinite_in_row", "val_metric", "closed_loop_every_epochs",
              "max_steps"),
}
PT_FILES = ("model.pt", "train_state.pt")


def training_config_hash(cfg: Config) -> str:
    """sha256 over the sections that affect training (data, preprocess, augment, model, loss, train) without
    `COSMETIC_KEYS`."""
    d = to_dict(cfg)
    for path, keys in COSMETIC_KEYS.items():
        node = d
        for part in path.split("."):
            node = node[part]
        for k in keys:
            node.pop(k, None)
    return config_hash(*(d[s] for s in ("data", "preprocess", "augment", "model", "loss", "train")))


def git_commit() -> str:
    """`git rev-parse HEAD` of the working directory, or "unknown"."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ------------------------------------------------------------------------------------------------ RNG states
def capture_rng(loader_generator: torch.Generator | None = None) -> dict[str, Any]:
    """RNG states of python, numpy, torch (CPU + CUDA) and the loader generator as weights_only-safe data."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if loader_generator is not None:
        state["loader"] = loader_generator.get_state()
    return state


def restore_rng(state: dict[str, Any], loader_generator: torch.Generator | None = None) -> None:
    """Inverse of `capture_rng`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if loader_generator is not None and "loader" in state:
        loader_generator.set_state(state["loader"])


def load_train_state(ckpt_dir: str | Path) -> dict[str, Any]:
    """train_state.pt of a checkpoint directory, after checking its sha256."""
    ckpt_dir = Path(ckpt_dir)
    return verified_load(ckpt_dir, "train_state.pt", read_meta(ckpt_dir))


def previous_checkpoint_hint(ckpt_dir: str | Path) -> str:
    """What to do when `ckpt_dir` cannot be resumed: point `latest` at the newest older checkpoint, or start over."""
    ckpt_dir = Path(ckpt_dir).resolve()  # `latest` -> step_XXXXXXXX
    exp_dir = ckpt_dir.parent
    older = sorted((p for p in exp_dir.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp")
                    and p.name < ckpt_dir.name and (p / "meta.json").is_file()), reverse=True)
    if older:
        return (f"resume from the previous step instead: ln -sfn {older[0].name} {exp_dir / 'latest'} "
                f"(or delete {exp_dir} to start over)")
    return f"no earlier checkpoint is left: delete {exp_dir} to start over"


def _nbytes(obj: Any) -> int:
    """Bytes of the tensors in a (nested) state dict: about what torch.save writes."""
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


# ---------------------------------------------------------------------------------------------------- saving
def _replace_symlink(link: Path, target_name: str) -> None:
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target_name, tmp)
    os.replace(tmp, link)


def _metric(meta: dict[str, Any], key: str) -> float:
    value = meta.get("metrics", {}).get(key)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else -math.inf


EXPORT_FILES = ("model.pt", "meta.json", "resolved_config.json")


def export_models(exp_dir: str | Path, out_dir: str | Path) -> None:
    """Copy the `best` and `latest` checkpoints' weights (model.pt, meta.json, resolved_config.json) into
    `out_dir/{best,latest}/`: the small, pushed DVC output that evaluation and the closed loop read, while the
    full training checkpoints (optimizer, RNG, every step) stay local."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for which in ("best", "latest"):
        src = resolve_checkpoint(exp_dir, which)  # type: ignore[arg-type]
        (tmp / which).mkdir(parents=True)
        for name in EXPORT_FILES:
            shutil.copy2(src / name, tmp / which / name)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)


class Checkpointer:
    """Saves, links, prunes and resumes the checkpoints of one experiment directory (rank 0 only)."""

    def __init__(self, exp_dir: str | Path, cfg: Config, data_hashes: dict[str, str]) -> None:
        self.exp_dir = Path(exp_dir)
        self.cfg = cfg
        self.identity = {"config_hash": training_config_hash(cfg), **data_hashes}

    def save(self, step: int, model_state: dict, train_state: dict, metrics: dict[str, float]) -> Path:
        """Write `step_<step>/` atomically, move `latest` (and `best` when train.val_metric improved), prune."""
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.exp_dir.glob("step_*.tmp"):
            shutil.rmtree(stale)
        name = f"step_{step:08d}"
        final = self.exp_dir / name
        if not final.exists():
            check_finite_weights(model_state, f"{final} (not saved)")  # never keep a checkpoint of a diverged run
            tmp = self.exp_dir / f"{name}.tmp"
            try:
                self._write(tmp, step, model_state, train_state, metrics)
            except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as "unexpected pos"
                shutil.rmtree(tmp, ignore_errors=True)
                if is_disk_full(exc, self.exp_dir):
                    raise DiskFullError(self.exp_dir, _nbytes(model_state) + _nbytes(train_state)) from None
                raise
            os.rename(tmp, final)
        _replace_symlink(self.exp_dir / "latest", name)
        if self._improves(metrics):
            _replace_symlink(self.exp_dir / "best", name)
        self.prune()
        return final

    def _write(self, tmp: Path, step: int, model_state: dict, train_state: dict, metrics: dict[str, float]) -> None:
        tmp.mkdir()
        torch.save(model_state, tmp / "model.pt")
        torch.save(train_state, tmp / "train_state.pt")
        atomic_write_json(tmp / "resolved_config.json", to_dict(self.cfg))
        meta = {**self.identity, "step": step, "git_commit": git_commit(), "metrics": metrics,
                "sha256": {f: sha256_file(tmp / f) for f in PT_FILES}}
        atomic_write_json(tmp / "meta.json", meta)

    def _improves(self, metrics: dict[str, float]) -> bool:
        key = self.cfg.train.val_metric
        new = _metric({"metrics": metrics}, key)
        if new == -math.inf:
            return not (self.exp_dir / "best").exists()
        best = self.exp_dir / "best"
        return not best.exists() or new > _metric(read_meta(best.resolve()), key)

    def prune(self) -> None:
        """Keep the top train.keep_top_k checkpoints by train.val_metric plus `latest` and `best`."""
        ckpts = sorted(p for p in self.exp_dir.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
        key = self.cfg.train.val_metric
        ranked = sorted(ckpts, key=lambda p: (_metric(read_meta(p), key), p.name), reverse=True)
        keep = {p.name for p in ranked[: self.cfg.train.keep_top_k]}
        keep |= {(self.exp_dir / link).resolve().name for link in ("latest", "best")
                 if (self.exp_dir / link).exists()}
        for p in ckpts:
            if p.name not in keep:
                shutil.rmtree(p)

    def resumable(self) -> Path | None:
        """`latest` when it belongs to this config and data; otherwise log why, remove the experiment's stale
        checkpoints (DVC persists this directory) and return None."""
        if not self.exp_dir.exists():
            return None
        latest = self.exp_dir / "latest"
        reason = "no 'latest' checkpoint"
        if latest.exists():
            try:
                meta = read_meta(latest.resolve())
                diff = [k for k, v in self.identity.items() if meta.get(k) != v]
                if not diff:
                    return latest.resolve()
                reason = f"{', '.join(diff)} changed"
            except (CheckpointError, json.JSONDecodeError) as exc:  # damaged, not stale: never delete it
                raise CheckpointError(f"{latest}: cannot resume, meta.json unreadable ({exc}); "
                                      f"{previous_checkpoint_hint(latest)}") from None
        stale = [p for p in self.exp_dir.iterdir()]
        if stale:
            log.info("starting fresh in %s: %s; removing %d stale entries", self.exp_dir, reason, len(stale))
        for p in stale:
            if p.is_symlink() or p.is_file():
                p.unlink()
            else:
                shutil.rmtree(p)
        return None
