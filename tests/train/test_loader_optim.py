"""Loader order / skipping / grouping / DDP split, and the optimizer's groups and LR schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _standin import StandinDataset, StandinLoss, StandinModel, tiny_cfg

from drivepipe.data.augment import Augmenter
from drivepipe.data.loader import EpochBatchSampler, build_loader
from drivepipe.train.optim import build_optimizer, build_scheduler, lr_factor


@pytest.fixture(scope="module")
def dataset() -> StandinDataset:
    return StandinDataset(None, tiny_cfg(), "train")


def _tokens(loader, epoch: int, skip: int = 0) -> list[list[str]]:
    loader.batch_sampler.set_epoch(epoch, skip)
    return [[m["token"] for m in b["meta"]] for b in loader]


def test_order_is_deterministic_per_epoch_and_skip_matches_tail(dataset) -> None:
    cfg = tiny_cfg(batch_size=3)
    a, b = build_loader(dataset, cfg, True), build_loader(dataset, cfg, True)
    full = _tokens(a, 1)
    assert full == _tokens(b, 1) and full != _tokens(a, 2)
    assert _tokens(b, 1, skip=2) == full[2:]
    assert sorted(sum(full, [])) == sorted(f"train-{i}" for i in range(12))


def test_augmentation_depends_only_on_seed_epoch_index(dataset) -> None:
    cfg = tiny_cfg(batch_size=2)
    aug = Augmenter(cfg.augment, cfg.preprocess)
    one = build_loader(dataset, cfg, True, transform=aug)
    one.batch_sampler.set_epoch(0, 0)
    full = [b["points"] for b in one]
    one.batch_sampler.set_epoch(0, 3)
    assert all(torch.equal(x, y) for x, y in zip(full[3:], [b["points"] for b in one], strict=True))
    val = build_loader(StandinDataset(None, cfg, "val"), cfg, False, transform=aug)  # never augmented
    val.batch_sampler.set_epoch(0)
    batch = next(iter(val))
    assert torch.equal(batch["points"][0, : val.dataset.dataset.num_points(0)],
                       torch.from_numpy(val.dataset.dataset.samples[0]["points"]))


def test_group_by_size_sorts_inside_buckets(dataset) -> None:
    sampler = EpochBatchSampler(dataset, 2, shuffle=True, seed=0, group_by_size=True)
    sampler.set_epoch(0)
    batches = sampler.batches()
    for batch in batches:
        sizes = [dataset.num_points(i) for i in batch]
        assert sizes == sorted(sizes)
    assert sorted(sum(batches, [])) == list(range(12))


def test_ddp_ranks_get_disjoint_shards(dataset) -> None:
    shards = []
    for rank in range(2):
        s = EpochBatchSampler(dataset, 2, shuffle=True, seed=0, rank=rank, world_size=2, drop_last=True)
        s.set_epoch(3)
        shards.append(sum(s.batches(), []))
    assert len(shards[0]) == len(shards[1]) == 6 and not set(shards[0]) & set(shards[1])


def test_lr_schedule_warmup_cosine_step_constant() -> None:
    t = tiny_cfg(warmup_steps=4, schedule="cosine").train
    assert [lr_factor(s, t, 20, 5) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, t, 20, 5) == 1.0
    assert math.isclose(lr_factor(12, t, 20, 5), 0.5, abs_tol=1e-12)  # half way through the cosine
    assert math.isclose(lr_factor(20, t, 20, 5), 0.0, abs_tol=1e-12)
    assert 0 < lr_factor(19, t, 20, 5) < 0.01
    st = tiny_cfg(warmup_steps=0, schedule="step", step_every_epochs=2, step_gamma=0.5).train
    assert [lr_factor(s, st, 40, 5) for s in (0, 9, 10, 19, 20)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert lr_factor(99, tiny_cfg(warmup_steps=0, schedule="constant").train, 10, 5) == 1.0


def test_param_groups_and_scheduler_steps() -> None:
    cfg = tiny_cfg(warmup_steps=2, lr=0.1, weight_decay=0.01)
    model, loss = StandinModel(cfg), StandinLoss(cfg)
    opt = build_optimizer(model, loss, cfg.train)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["decay"]["weight_decay"] == 0.01
    assert all(p.ndim >= 2 for p in groups["decay"]["params"])
    assert groups["no_decay"]["weight_decay"] == 0.0 and groups["loss_balancing"]["weight_decay"] == 0.0
    assert groups["loss_balancing"]["params"][0] is loss.log_var
    no_decay = {id(p) for p in groups["no_decay"]["params"]}
    assert id(model.norm.weight) in no_decay and id(model.conv.bias) in no_decay
    sched = build_scheduler(opt, cfg.train, 10, 5)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert np.allclose(lrs, [0.05, 0.1, 0.1, 0.1 * 0.5 * (1 + math.cos(math.pi / 8))])


def test_worker_processes_give_the_same_batches(dataset) -> None:
    cfg0, cfg1 = tiny_cfg(batch_size=4, workers=0), tiny_cfg(batch_size=4, workers=1, persistent_workers=True)
    aug = Augmenter(cfg0.augment, cfg0.preprocess)
    l0, l1 = build_loader(dataset, cfg0, True, transform=aug), build_loader(dataset, cfg1, True, transform=aug)
    assert l1.persistent_workers and l1.prefetch_factor == cfg1.train.prefetch_factor
    for epoch in (0, 1):  # the second epoch reuses the persistent worker
        for loader in (l0, l1):
            loader.batch_sampler.set_epoch(epoch, 1)
        pairs = list(zip(l0, l1, strict=True))
        assert len(pairs) == 2 and all(torch.equal(a["points"], b["points"]) and torch.equal(a["images"], b["images"])
                                       for a, b in pairs)
