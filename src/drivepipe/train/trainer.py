"""The training loop: `fit(cfg, cache_dir, ckpt_root, reports_dir)`.

One optimizer step (`Trainer.train_step`, house style P8): for each of train.accumulate micro-batches an autocast
forward, loss / accumulate, scaled backward (DDP gradient sync only on the last); then unscale, clip (grad norm
recorded), scaler.step + scaler.update, scheduler step, zero_grad(set_to_none=True). A non-finite loss voids the
step (grads zeroed, no optimizer/scheduler step), is counted and logged; train.max_nonfinite_in_row in a row stop
the run. Steps are counted in optimizer steps (`step`) and micro-batches (`micro_step`).

Checkpoints (every train.save_every_epochs epochs, at closed-loop epochs and at the end) are preceded by a light
validation that decides `best`. A run whose `latest` checkpoint matches the training config and data hashes resumes
bitwise-exactly (model, optimizer, scheduler, scaler, loss module, counters, RNGs, position inside the epoch).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from drivepipe.config import Config, TrainConfig
from drivepipe.data.augment import Augmenter
from drivepipe.data.loader import build_loader
from drivepipe.errors import CheckpointError, NonFiniteError
from drivepipe.sample import to_device
from drivepipe.train import distributed as D
from drivepipe.train.checkpoint import (
    Checkpointer,
    capture_rng,
    load_model_weights,
    load_train_state,
    previous_checkpoint_hint,
    restore_rng,
)
from drivepipe.train.live import TrainLogger
from drivepipe.train.optim import build_optimizer, build_scheduler
from drivepipe.train.validate import validate
from drivepipe.utils.io import sha256_json

log = logging.getLogger(__name__)


@dataclass
class Builders:
    """How the trainer makes its parts; tests pass stand-ins, the stage uses `default_builders()`."""
    model: Callable[[Config], nn.Module]
    loss: Callable[[Config], nn.Module]
    dataset: Callable[[Path, Config, str], Any]  # (cache_dir, cfg, split) -> map-style dataset of Samples


def default_builders() -> Builders:
    from drivepipe.data.dataset import CacheDataset
    from drivepipe.losses import MultiTaskLoss
    from drivepipe.model.model import build_model

    return Builders(model=build_model, loss=MultiTaskLoss, dataset=lambda d, c, s: CacheDataset(d, c, s))


@dataclass
class Progress:
    """Counters saved in train_state.pt; `batch_in_epoch` = micro-batches of `epoch` already consumed."""
    step: int = 0
    micro_step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    nonfinite_total: int = 0
    nonfinite_in_row: int = 0
    last_metrics: dict[str, float] = field(default_factory=dict)


class _ModelWithLoss(nn.Module):
    """model + loss module as one module, so one DDP wrapper syncs both (uncertainty weights included)."""

    def __init__(self, model: nn.Module, loss: nn.Module) -> None:
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.loss(self.model(batch), batch)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_determinism(t: TrainConfig) -> None:
    """torch.use_deterministic_algorithms(train.deterministic) with CUBLAS_WORKSPACE_CONFIG; cudnn switches."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(t.deterministic, warn_only=False)
    torch.backends.cudnn.benchmark = t.cudnn_benchmark
    torch.backends.cudnn.deterministic = t.deterministic


def resolve_device(t: TrainConfig, info: D.DistInfo) -> torch.device:
    if t.device == "cuda" or (t.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def resolve_amp(t: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use GradScaler). fp16 needs CUDA; on CPU it falls back to off with a warning."""
    if t.amp == "fp16" and device.type != "cuda":
        log.warning("train.amp=fp16 is not available on %s; training in fp32", device)
        return None, False
    return {"fp32": (None, False), "fp16": (torch.float16, True), "bf16": (torch.bfloat16, False)}[t.amp]


def data_hashes(header: dict[str, Any]) -> dict[str, str]:
    """Dataset identity stored in meta.json and checked on resume: the raw-data manifest hash and a hash of the
    cache header (its own `header_hash` when present, else sha256 of the whole header, i.e. config + sample list)."""
    manifest = header.get("manifest_hash", header.get("data_manifest_hash", "unknown"))
    return {"manifest_hash": str(manifest),
            "header_hash": str(header.get("header_hash") or (sha256_json(header) if header else "unknown"))}


# (cfg, checkpoint dir, output dir) -> results; the closed-loop diagnostics of one checkpoint
ClosedLoopCheck = Callable[[Config, Path, Path], Any]


class Trainer:
    """Builds data, model, optimizer, checkpointer and logger; `fit()` runs the epochs."""

    def __init__(self, cfg: Config, cache_dir: Path, ckpt_root: Path, reports_dir: Path,
                 builders: Builders | None = None, closed_loop: ClosedLoopCheck | None = None) -> None:
        self.cfg, t = cfg, cfg.train
        self.closed_loop_check = closed_loop
        builders = builders or default_builders()
        self.dist = D.init_distributed("cuda" if resolve_device(t, D.DistInfo()).type == "cuda" else "cpu")
        self.device = resolve_device(t, self.dist)
        self._det_before = torch.are_deterministic_algorithms_enabled()
        configure_determinism(t)
        seed_everything(t.seed + self.dist.rank)
        self.amp_dtype, use_scaler = resolve_amp(t, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self._build_data(builders, Path(cache_dir))
        self.model = builders.model(cfg).to(self.device)
        self.loss_fn = builders.loss(cfg).to(self.device)
        self.net = D.wrap_ddp(_ModelWithLoss(self.model, self.loss_fn), self.dist, self.device)
        self.optimizer = build_optimizer(self.model, self.loss_fn, t)
        self.scheduler = build_scheduler(self.optimizer, t, t.epochs * self.steps_per_epoch, self.steps_per_epoch)
        self.progress = Progress()
        self.checkpointer = Checkpointer(Path(ckpt_root) / t.experiment, cfg, self.data_hashes)
        resume_dir = self._resume_dir()
        if resume_dir is not None:
            self._load(resume_dir)
        self.logger = TrainLogger(reports_dir, t.log_every_steps, enabled=self.dist.is_main,
                                  resume_step=self.progress.step if resume_dir is not None else None)
        self.last_saved_step = self.progress.step if resume_dir is not None else -1

    def _build_data(self, builders: Builders, cache_dir: Path) -> None:
        cfg, t = self.cfg, self.cfg.train
        train_ds = builders.dataset(cache_dir, cfg, "train")
        self.data_hashes = data_hashes(getattr(train_ds, "header", None) or {})
        augment = Augmenter(cfg.augment, cfg.preprocess) if cfg.augment.enabled else None
        self.train_loader = build_loader(train_ds, cfg, True, self.dist.rank, self.dist.world_size,
                                         transform=augment)
        self.val_loader = build_loader(builders.dataset(cache_dir, cfg, "val"), cfg, False) \
            if self.dist.is_main else None
        self.steps_per_epoch = self.train_loader.batch_sampler.num_batches() // t.accumulate
        if self.steps_per_epoch == 0:
            raise ValueError(f"train split has {len(train_ds)} samples: fewer than one optimizer step "
                             f"(train.batch_size {t.batch_size} x train.accumulate {t.accumulate})")

    def _resume_dir(self) -> Path | None:
        found = self.checkpointer.resumable() if self.dist.is_main else None
        found = D.broadcast_object(str(found) if found else "", self.dist)
        D.barrier(self.dist)
        return Path(found) if found else None

    # ------------------------------------------------------------------------------------------------- state
    def state_dict(self, rng_per_rank: list[Any] | None = None) -> dict[str, Any]:
        """train_state.pt contents: tensors, plain lists / dicts / numbers only (weights_only-safe). `rng` is this
        rank's RNG state; `rng_per_rank` (from `D.gather_to_main`) holds every rank's, restored rank by rank."""
        rng = capture_rng(self.train_loader.generator)
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "loss_module": self.loss_fn.state_dict(),
                "progress": asdict(self.progress), "rng": rng, "rng_per_rank": rng_per_rank or [rng],
                "world_size": self.dist.world_size}

    def _load(self, ckpt_dir: Path) -> None:
        try:
            weights, _ = load_model_weights(ckpt_dir)
            state = load_train_state(ckpt_dir)
        except CheckpointError as exc:  # e.g. a train_state.pt cut short by a crash outside the atomic save
            raise CheckpointError(f"{exc}; {previous_checkpoint_hint(ckpt_dir)}") from None
        self.model.load_state_dict(weights, strict=True)
        self.loss_fn.load_state_dict(state["loss_module"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.progress = Progress(**state["progress"])
        per_rank = state.get("rng_per_rank") or [state["rng"]]
        if len(per_rank) != self.dist.world_size:
            log.warning("checkpoint has RNG states of %d ranks, this run has %d: rank %d restores rank 0's state "
                        "(the run continues, but not bitwise as an uninterrupted one)", len(per_rank),
                        self.dist.world_size, self.dist.rank)
        restore_rng(per_rank[self.dist.rank] if len(per_rank) == self.dist.world_size else state["rng"],
                    self.train_loader.generator)
        log.info("resumed from %s (step %d, epoch %d, batch %d)", ckpt_dir, self.progress.step,
                 self.progress.epoch, self.progress.batch_in_epoch)

    # -------------------------------------------------------------------------------------------------- loop
    def fit(self) -> dict[str, Any]:
        """Train until train.epochs (or train.max_steps); returns the final summary."""
        t, p = self.cfg.train, self.progress
        self.net.train()
        stop = t.max_steps > 0 and p.step >= t.max_steps
        bar = self._progress_bar()
        while p.epoch < t.epochs and not stop:
            self.train_loader.batch_sampler.set_epoch(p.epoch, skip_batches=p.batch_in_epoch)
            self.train_loader.generator.manual_seed(t.seed * 100_003 + p.epoch)
            batches = iter(self.train_loader)
            while not stop:
                tic = time.perf_counter()
                micro = [b for _, b in zip(range(t.accumulate), batches)]
                wait = time.perf_counter() - tic
                if len(micro) < t.accumulate:
                    break
                metrics = self.train_step(micro)
                p.micro_step += len(micro)
                p.batch_in_epoch += len(micro)
                stop = t.max_steps > 0 and p.step >= t.max_steps
                if metrics is not None:
                    self._log_step(metrics, wait, time.perf_counter() - tic, len(micro))
                    bar.update(1)
                    bar.set_postfix(epoch=p.epoch, loss=f"{metrics['loss/total']:.3f}", refresh=False)
            if not stop:
                p.epoch, p.batch_in_epoch = p.epoch + 1, 0
                self._end_of_epoch(final=p.epoch >= t.epochs)
        if stop:
            self._end_of_epoch(final=True)
        bar.close()
        summary = {**p.last_metrics, "step": p.step, "micro_step": p.micro_step, "epoch": p.epoch,
                   "nonfinite_total": p.nonfinite_total}
        self.logger.write_summary(summary)
        return summary

    def _progress_bar(self) -> Any:
        """A tqdm bar over optimizer steps on the main rank (disabled elsewhere)."""
        from tqdm import tqdm

        t = self.cfg.train
        total = t.epochs * self.steps_per_epoch
        if t.max_steps > 0:
            total = min(total, t.max_steps)
        return tqdm(total=total, initial=self.progress.step, desc="train", unit="step", disable=not self.dist.is_main)

    def train_step(self, micro_batches: list[dict[str, Any]]) -> dict[str, float] | None:
        """One optimizer step over `accumulate` micro-batches; None when a non-finite loss voided it."""
        n = len(micro_batches)
        sums: dict[str, torch.Tensor] = {}
        for k, batch in enumerate(micro_batches):
            batch = to_device(batch, self.device)
            sync = k == n - 1 or not self.dist.enabled
            with nullcontext() if sync else self.net.no_sync():
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    terms = self.net(batch)
                loss = terms["loss/total"].float()
                if not D.all_true(bool(torch.isfinite(loss)), self.dist, self.device):
                    self._nonfinite(k)
                    return None
                self.scaler.scale(loss / n).backward()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float() / n
        self.scaler.unscale_(self.optimizer)
        params = [q for g in self.optimizer.param_groups for q in g["params"]]
        clip = self.cfg.train.grad_clip if self.cfg.train.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.progress.step += 1
        self.progress.nonfinite_in_row = 0
        out = {name: float(v) for name, v in sums.items()}
        out["train/grad_norm"] = float(grad_norm)
        out["train/lr"] = self.optimizer.param_groups[0]["lr"]
        return out

    def _nonfinite(self, micro_index: int) -> None:
        """Void the current step; raise after train.max_nonfinite_in_row consecutive non-finite losses."""
        p, limit = self.progress, self.cfg.train.max_nonfinite_in_row
        self.optimizer.zero_grad(set_to_none=True)
        p.nonfinite_total += 1
        p.nonfinite_in_row += 1
        log.warning("non-finite loss at optimizer step %d (micro-batch %d of the step); step skipped "
                    "(%d in a row, %d in total)", p.step, micro_index, p.nonfinite_in_row, p.nonfinite_total)
        self.logger.log_epoch(p.step, {"train/nonfinite_total": float(p.nonfinite_total)})
        if p.nonfinite_in_row >= limit:
            raise NonFiniteError(
                f"training stopped: {p.nonfinite_in_row} non-finite losses in a row (train.max_nonfinite_in_row="
                f"{limit}) at optimizer step {p.step}, micro-batch {p.micro_step}. Check the learning rate and "
                "warm-up (train.lr, train.warmup_steps), AMP (train.amp: try off or bf16), the cached data for "
                "NaN/inf (rerun `dvc repro preprocess`) and the loss terms logged under loss/*.")

    def _log_step(self, metrics: dict[str, float], wait_s: float, step_s: float, micro: int) -> None:
        """Step metrics + throughput: samples/s over all ranks, share of the step spent waiting for the loader."""
        samples = micro * self.cfg.train.batch_size * self.dist.world_size
        extra = {"train/samples_per_s": samples / max(step_s, 1e-9), "train/data_wait_frac": wait_s / max(step_s, 1e-9),
                 "train/micro_step": float(self.progress.micro_step),
                 "train/nonfinite_total": float(self.progress.nonfinite_total)}
        if self.device.type == "cuda":
            extra["train/gpu_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        self.logger.maybe_log(self.progress.step, {**metrics, **extra})

    # ------------------------------------------------------------------------------------ checkpoint + eval
    def _end_of_epoch(self, final: bool) -> None:
        t, p = self.cfg.train, self.progress
        if p.step == 0 and p.nonfinite_total > 0:  # fewer than max_nonfinite_in_row steps, every one voided
            raise NonFiniteError(f"training stopped: all {p.nonfinite_total} steps so far had a non-finite loss, no "
                                 "optimizer step succeeded; nothing was saved. Check train.lr, the loss weights and "
                                 "the cached data (dvc repro preprocess)")
        closed_loop = t.closed_loop_every_epochs > 0 and p.epoch % t.closed_loop_every_epochs == 0
        if not (final or closed_loop or p.epoch % t.save_every_epochs == 0) or p.step == self.last_saved_step:
            return
        rngs = D.gather_to_main(capture_rng(self.train_loader.generator), self.dist)
        if self.dist.is_main:
            metrics = validate(self.model, self.loss_fn, self.val_loader, self.device, self.cfg)
            p.last_metrics = metrics
            self.logger.log_epoch(p.step, {**metrics, "epoch": float(p.epoch)})
            ckpt_dir = self.checkpointer.save(p.step, self.model.state_dict(), self.state_dict(rngs), metrics)
            if closed_loop:
                self._closed_loop(ckpt_dir)
        self.last_saved_step = p.step
        D.barrier(self.dist)

    def _closed_loop(self, ckpt_dir: Path) -> None:
        """Guarded call of the closed-loop check that `cli/train.py` passes in (`sim.harness.run_for_checkpoint`);
        results go to `<ckpt>/closed_loop/`. The trainer itself never imports the simulator."""
        run_for_checkpoint = self.closed_loop_check
        if run_for_checkpoint is None:
            log.info("closed-loop check skipped: no check was passed to the trainer")
            return
        rng = capture_rng()
        try:
            run_for_checkpoint(self.cfg, ckpt_dir, ckpt_dir / "closed_loop")
        except Exception as exc:  # noqa: BLE001 - a failing simulator must not kill training
            log.warning("closed-loop check of %s failed: %s", ckpt_dir, exc)
        finally:
            restore_rng(rng)

    def close(self) -> None:
        self.logger.close()
        torch.use_deterministic_algorithms(self._det_before)
        D.cleanup(self.dist)


def fit(cfg: Config, cache_dir: str | Path, ckpt_root: str | Path, reports_dir: str | Path,
        builders: Builders | None = None, closed_loop: ClosedLoopCheck | None = None) -> dict[str, Any]:
    """Train (resuming `ckpt_root/<experiment>/latest` when it matches) and return the final summary dict.
    `closed_loop(cfg, ckpt_dir, out_dir)` runs every train.closed_loop_every_epochs epochs when given."""
    trainer = Trainer(cfg, Path(cache_dir), Path(ckpt_root), Path(reports_dir), builders, closed_loop)
    try:
        return trainer.fit()
    finally:
        trainer.close()
