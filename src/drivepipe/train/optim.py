"""AdamW with decay / no-decay parameter groups and the learning-rate schedule (per optimizer step)."""

from __future__ import annotations

import math

import torch
from torch import nn

from drivepipe.config import TrainConfig


def param_groups(model: nn.Module, loss_module: nn.Module | None, weight_decay: float) -> list[dict]:
    """Two or three groups: weights with decay; norms, biases and other 1-D params without; the loss-balancing
    parameters (uncertainty log-variances) without decay. Parameter order is deterministic (named_parameters)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_norm = any(k in name.lower() for k in ("norm", ".bn", "bn."))
        (no_decay if p.ndim < 2 or is_norm else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
              {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]
    loss_params = [p for p in loss_module.parameters() if p.requires_grad] if loss_module is not None else []
    if loss_params:
        groups.append({"params": loss_params, "weight_decay": 0.0, "name": "loss_balancing"})
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, loss_module: nn.Module | None, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over `param_groups` with lr = train.lr (the schedule multiplies it)."""
    return torch.optim.AdamW(param_groups(model, loss_module, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))


def lr_factor(step: int, cfg: TrainConfig, total_steps: int, steps_per_epoch: int) -> float:
    """Multiplier of train.lr for optimizer step `step` (0-based).

    Linear warm-up over train.warmup_steps ((step + 1) / warmup), then
    - cosine: 0.5 * (1 + cos(pi * p)) with p = (step - warmup) / (total - warmup), reaching 0 at step = total;
    - step: train.step_gamma ** (epoch // train.step_every_epochs), epoch = step // steps_per_epoch;
    - constant: 1.
    """
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "cosine":
        span = max(1, total_steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.schedule == "step":
        epoch = step // max(1, steps_per_epoch)
        return cfg.step_gamma ** (epoch // cfg.step_every_epochs)
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimizer step; its state_dict is plain (loads with weights_only=True)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg, total_steps, steps_per_epoch))
