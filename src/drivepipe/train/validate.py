"""Light validation run after each checkpoint: mean loss terms plus a few cheap metrics, and `val/score`.

Metrics (each computed only when the model produces the output it needs):
- `val/det_recall_2m`: share of ground-truth box centres with a heatmap peak (3x3 max, sigmoid > 0.3, top
  model.max_detections, any class) within 2 m (peak at its cell centre, no offsets);
- `val/seg_iou`, `val/occ_iou`: IoU of sigmoid > 0.5 rasters, summed over the split, mean over channels;
- `val/min_ade`: minADE over K modes (m), mean over valid agents.
`val/score` (higher is better) = mean of [det_recall_2m, seg_iou, occ_iou, 1 / (1 + min_ade)] over the ones present;
when none is present (a model without these heads), -val/loss/total.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
import torch.nn.functional as F

from drivepipe.config import Config
from drivepipe.sample import bev_cell_centers, to_device

PEAK_THRESHOLD = 0.3
MATCH_RADIUS_M = 2.0


def _det_recall(outputs: dict[str, torch.Tensor], batch: dict[str, Any], cfg: Config) -> tuple[float, float]:
    """(matched, total) ground-truth boxes inside the BEV grid."""
    heat = torch.sigmoid(outputs["det.heatmap"].float()).amax(dim=1)               # (B, S, S)
    peaks = (heat == F.max_pool2d(heat[:, None], 3, 1, 1)[:, 0]) & (heat > PEAK_THRESHOLD)
    centres = torch.as_tensor(bev_cell_centers(heat.shape[-1], cfg.preprocess.bev_resolution_m),
                              dtype=torch.float32, device=heat.device)
    extent = cfg.preprocess.bev_extent_m
    matched = total = 0.0
    for b in range(heat.shape[0]):
        gt = batch["boxes"][b][batch["box_valid"][b]][:, :2].float()
        gt = gt[(gt.abs() < extent).all(dim=1)]
        total += len(gt)
        score = torch.where(peaks[b], heat[b], torch.zeros_like(heat[b])).flatten()
        top = score.topk(min(cfg.model.max_detections, score.numel()))
        cells = top.indices[top.values > 0]
        if len(gt) == 0 or len(cells) == 0:
            continue
        xy = torch.stack([centres[cells // heat.shape[-1]], centres[cells % heat.shape[-1]]], dim=1)
        matched += float((torch.cdist(gt, xy).amin(dim=1) <= MATCH_RADIUS_M).sum())
    return matched, total


def _iou_counts(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (intersection, union) counts summed over the batch."""
    pred = logits.float() > 0  # sigmoid > 0.5
    tgt = target > 0
    return (pred & tgt).sum(dim=(0, 2, 3)).double(), (pred | tgt).sum(dim=(0, 2, 3)).double()


def _min_ade(outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> tuple[float, float]:
    """(sum of per-agent minADE, number of agents with at least one valid future step)."""
    traj = outputs["pred.traj"].float()                                           # (B, A, K, Tf, 2)
    fut = batch["agent_fut"][..., :2].float()                                     # (B, A', Tf, 2)
    valid = batch["agent_fut_valid"] & batch["agent_valid"][..., None]            # (B, A', Tf)
    a = min(traj.shape[1], fut.shape[1])
    traj, fut, valid = traj[:, :a], fut[:, :a], valid[:, :a].float()
    dist = (traj - fut[:, :, None]).norm(dim=-1)                                  # (B, A, K, Tf)
    count = valid.sum(-1)                                                         # (B, A)
    ade = (dist * valid[:, :, None]).sum(-1) / count.clamp(min=1)[..., None]     # (B, A, K)
    has = count > 0
    return float(ade.amin(dim=-1)[has].sum()), float(has.sum())


@torch.no_grad()
def validate(model: torch.nn.Module, loss_fn: torch.nn.Module, loader: Any, device: torch.device,
             cfg: Config, max_batches: int = 0) -> dict[str, float]:
    """Run the model over the validation loader (no augmentation) and return `val/*` metrics as floats."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = defaultdict(float)
    iou: dict[str, list[torch.Tensor]] = {}
    n = 0
    for k, batch in enumerate(loader):
        if max_batches and k >= max_batches:
            break
        batch = to_device(batch, device)
        outputs = model(batch)
        for name, value in loss_fn(outputs, batch).items():
            sums[name.replace("loss/", "val/loss/", 1)] += float(value)
        n += 1
        if "det.heatmap" in outputs:
            m, t = _det_recall(outputs, batch, cfg)
            sums["_det_m"] += m
            sums["_det_t"] += t
        for key, target in (("seg", "seg"), ("occ", "occ")):
            if f"{key}.logits" in outputs:
                i, u = _iou_counts(outputs[f"{key}.logits"], batch[target])
                prev = iou.get(key, [torch.zeros_like(i), torch.zeros_like(u)])
                iou[key] = [prev[0] + i, prev[1] + u]
        if "pred.traj" in outputs:
            s, c = _min_ade(outputs, batch)
            sums["_ade_s"] += s
            sums["_ade_c"] += c
    model.train(was_training)
    return _finish(sums, iou, n)


def _finish(sums: dict[str, float], iou: dict[str, list[torch.Tensor]], n: int) -> dict[str, float]:
    out = {k: v / max(n, 1) for k, v in sums.items() if k.startswith("val/")}
    parts = []
    if sums.get("_det_t", 0) > 0:
        out["val/det_recall_2m"] = sums["_det_m"] / sums["_det_t"]
        parts.append(out["val/det_recall_2m"])
    for key, (i, u) in iou.items():
        ok = u > 0
        out[f"val/{key}_iou"] = float((i[ok] / u[ok]).mean()) if bool(ok.any()) else 0.0
        parts.append(out[f"val/{key}_iou"])
    if sums.get("_ade_c", 0) > 0:
        out["val/min_ade"] = sums["_ade_s"] / sums["_ade_c"]
        parts.append(1.0 / (1.0 + out["val/min_ade"]))
    out["val/score"] = sum(parts) / len(parts) if parts else -out.get("val/loss/total", float("inf"))
    return out
