"""Tiny stand-ins for the model, the multi-task loss and the cache dataset, used by the trainer tests (they follow
the documented APIs: forward(batch) -> dict, loss(outputs, batch) -> {"loss/total", "loss/<head>/<term>"},
dataset[i] -> Sample + "meta", `.num_points(i)`, `.header`). Also runnable as a script for subprocess tests:
`python _standin.py CACHE CKPT REPORTS JSON_OVERRIDES`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from drivepipe.config import Config, from_dict
from drivepipe.sample import FIELDS


def tiny_params(**train) -> dict:
    return {
        "preprocess": {"cameras": ["CAM_F0"], "image_width": 16, "image_height": 16, "bev_size": 8,
                       "bev_resolution_m": 1.0, "pillar_size_m": 1.0, "history_steps": 2, "future_steps": 3,
                       "occupancy_future_steps": 1, "seg_classes": ["drivable_area", "lane"]},
        "train": {"epochs": 3, "batch_size": 2, "workers": 0, "save_every_epochs": 1, "log_every_steps": 1,
                  "warmup_steps": 2, "lr": 1e-2, "group_by_size": True, "keep_top_k": 2, **train},
    }


def tiny_cfg(**train) -> Config:
    return from_dict(tiny_params(**train))


def make_sample(cfg: Config, rng: np.random.Generator) -> dict:
    pre = cfg.preprocess
    s, e = pre.bev_size, pre.bev_extent_m
    th, tf, n = pre.history_steps + 1, pre.future_steps, int(round(2 * e / pre.pillar_size_m))
    p, m = int(rng.integers(5, 40)), int(rng.integers(1, 4))
    pts = np.concatenate([rng.uniform(-e + 0.01, e - 0.01, (p, 2)), rng.uniform(-1, 2, (p, 1)),
                          rng.uniform(0, 1, (p, 1))], axis=1).astype(np.float32)
    ij = np.floor((pts[:, :2] + e) / pre.pillar_size_m).astype(np.int64)
    idx = ij[:, 0] * n + ij[:, 1]
    order = np.argsort(idx, kind="stable")
    boxes = np.concatenate([rng.uniform(-e, e, (m, 2)), rng.uniform(0, 1, (m, 1)), rng.uniform(1, 4, (m, 3)),
                            rng.uniform(-3, 3, (m, 3))], axis=1).astype(np.float32)
    f = lambda shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    out = {
        "images": rng.integers(0, 256, (1, 3, pre.image_height, pre.image_width), dtype=np.uint8),
        "intrinsics": np.array([[[10.0, 0, 7.5], [0, 10.0, 7.5], [0, 0, 1]]], np.float32),
        "cam_to_ego": np.array([[[0, 0, 1, 1.5], [-1, 0, 0, 0], [0, -1, 0, 1.6], [0, 0, 0, 1]]], np.float32),
        "points": pts[order], "pillar_index": idx[order],
        "seg": (rng.random((len(pre.seg_classes), s, s)) < 0.3).astype(np.uint8),
        "occ": (rng.random((1 + pre.occupancy_future_steps, s, s)) < 0.2).astype(np.uint8),
        "boxes": boxes, "box_labels": rng.integers(0, 7, m), "box_track": np.arange(m, dtype=np.int64),
        "agent_box": np.arange(m, dtype=np.int64), "agent_labels": rng.integers(0, 7, m),
        "agent_hist": f((m, th, 3)), "agent_hist_valid": np.ones((m, th), bool),
        "agent_fut": f((m, tf, 3)), "agent_fut_valid": np.ones((m, tf), bool),
        "ego_hist": f((th, 3)), "ego_hist_valid": np.ones(th, bool), "ego_state": f(5),
        "ego_fut": f((tf, 3)), "ego_fut_valid": np.ones(tf, bool),
        "route": f((20, 2)), "route_valid": np.ones(20, bool),
    }
    for k, (dtype, _, _) in FIELDS.items():
        out[k] = out[k].astype(dtype)
    return out


class StandinDataset:
    """12 train / 4 val deterministic samples. Env STANDIN_NAN="i,j" puts NaN into those train samples;
    STANDIN_BLOCK_DIR=<dir> makes train reads block once <dir>/latest exists (for kill tests)."""

    def __init__(self, cache_dir: Path, cfg: Config, split: str) -> None:
        n = 12 if split == "train" else 4
        rng = np.random.default_rng(0 if split == "train" else 1)
        self.samples = [make_sample(cfg, rng) for _ in range(n)]
        self.split = split
        self.header = {"manifest_hash": "manifest-1", "header_hash": "header-1"}
        nan = os.environ.get("STANDIN_NAN", "")
        self.nan = {int(x) for x in nan.split(",") if x.isdigit()} if split == "train" else set()
        self.block = os.environ.get("STANDIN_BLOCK_DIR", "") if split == "train" else ""

    def __len__(self) -> int:
        return len(self.samples)

    def num_points(self, i: int) -> int:
        return len(self.samples[i]["points"])

    def __getitem__(self, i: int) -> dict:
        if self.block and (Path(self.block) / "pointers.json").exists():
            time.sleep(600)
        s = dict(self.samples[i])
        if i in self.nan or "all" in os.environ.get("STANDIN_NAN", "").split(","):
            s["ego_state"] = np.full(5, np.nan, np.float32)
        s["meta"] = {"token": f"{self.split}-{i}"}
        return s


class StandinModel(nn.Module):
    """Pillar scatter + two convs -> seg/occ logits, with dropout (so RNG state matters for resume)."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        pre = cfg.preprocess
        self.s, self.res, self.e = pre.bev_size, pre.bev_resolution_m, pre.bev_extent_m
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.2)
        self.seg = nn.Conv2d(8, len(pre.seg_classes), 1)
        self.occ = nn.Conv2d(8, 1 + pre.occupancy_future_steps, 1)
        self.ego = nn.Linear(5, 8)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        pts, valid = batch["points"], batch["point_valid"]
        b = pts.shape[0]
        ij = ((pts[..., :2] + self.e) / self.res).floor().long().clamp(0, self.s - 1)
        cell = torch.where(valid, ij[..., 0] * self.s + ij[..., 1], torch.zeros_like(ij[..., 0]))
        feat = torch.zeros(b, 3, self.s * self.s, device=pts.device)
        vals = torch.stack([valid.float(), pts[..., 2] * valid, pts[..., 3] * valid], 1)
        feat = feat.scatter_add(2, cell[:, None].expand(-1, 3, -1), vals).view(b, 3, self.s, self.s)
        img = batch["images"].float().mean(dim=(1, 2, 3, 4))[:, None, None, None] / 255.0
        x = self.drop(torch.relu(self.norm(self.conv(feat + img))))
        x = x + self.ego(batch["ego_state"])[:, :, None, None]
        return {"seg.logits": self.seg(x), "occ.logits": self.occ(x)}


class StandinLoss(nn.Module):
    """BCE per head with uncertainty weighting (learned log-variances, optimised with the model)."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.log_var = nn.Parameter(torch.zeros(2))

    def forward(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        seg = F.binary_cross_entropy_with_logits(outputs["seg.logits"], batch["seg"].float())
        occ = F.binary_cross_entropy_with_logits(outputs["occ.logits"], batch["occ"].float())
        terms = torch.stack([seg, occ])
        total = (torch.exp(-self.log_var) * terms + self.log_var / 2).sum()
        return {"loss/seg/bce": seg, "loss/occ/bce": occ, "loss/total": total}


def standin_builders():
    from drivepipe.train.trainer import Builders

    return Builders(model=StandinModel, loss=StandinLoss, dataset=StandinDataset)


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)
    from drivepipe.train.trainer import fit

    cache, ckpt, reports, overrides = argv
    summary = fit(tiny_cfg(**json.loads(overrides)), cache, ckpt, reports, builders=standin_builders())
    print(json.dumps({"step": summary["step"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
