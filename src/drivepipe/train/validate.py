"""Validation after each checkpoint: mean loss terms plus the evaluate stage's metrics, and `val/score`.

The metrics are `drivepipe.metrics.MetricSet` with the evaluate.* thresholds, the same definitions that the
evaluate stage reports (each computed only when the model produces the output it needs):
- `val/mAP`: detection mAP (nuScenes centre-distance matching) of boxes above evaluate.score_threshold;
- `val/seg_iou`: mean IoU over the map classes at evaluate.seg_threshold; `val/occ_iou` at evaluate.occ_threshold;
- `val/min_ade`: minADE over K modes (m), mean over agents with a valid future.
`val/score` (higher is better, picks `best`) = mean of [mAP, seg_iou, occ_iou, 1 / (1 + min_ade)] over the ones
present; when none is present (a model without these heads), -val/loss/total.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from drivepipe.config import Config
from drivepipe.metrics import MetricSet, batch_predictions, unbatch
from drivepipe.sample import to_device


@torch.no_grad()
def validate(model: torch.nn.Module, loss_fn: torch.nn.Module, loader: Any, device: torch.device,
             cfg: Config, max_batches: int = 0) -> dict[str, float]:
    """Run the model over the validation loader (no augmentation) and return `val/*` metrics as floats."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = defaultdict(float)
    metrics, heads = MetricSet.build(cfg), set()
    n = 0
    for k, batch in enumerate(loader):
        if max_batches and k >= max_batches:
            break
        on_device = to_device(batch, device)
        outputs = model(on_device)
        for name, value in loss_fn(outputs, on_device).items():
            sums[name.replace("loss/", "val/loss/", 1)] += float(value)
        n += 1
        preds = batch_predictions({key: v.detach().cpu() for key, v in outputs.items()}, cfg)
        heads |= {key for key, v in preds.items() if v is not None}
        for b in range(len(batch["boxes"])):
            metrics.update(preds, b, unbatch(batch, b))
    model.train(was_training)
    return _finish(sums, metrics.compute(), heads, n)


def _finish(sums: dict[str, float], res: dict[str, Any], heads: set[str], n: int) -> dict[str, float]:
    out = {k: v / max(n, 1) for k, v in sums.items()}
    parts = []
    if "det" in heads:
        out["val/mAP"] = float(res["detection"]["mAP"])
        parts.append(out["val/mAP"])
    for key, value in (("seg", res["segmentation"]["mIoU"]), ("occ", res["occupancy"]["iou"])):
        if key in heads:
            out[f"val/{key}_iou"] = float(value)
            parts.append(out[f"val/{key}_iou"])
    if "traj" in heads and res["prediction"]["minADE"] is not None:
        out["val/min_ade"] = float(res["prediction"]["minADE"])
        parts.append(1.0 / (1.0 + out["val/min_ade"]))
    out["val/score"] = sum(parts) / len(parts) if parts else -out.get("val/loss/total", float("inf"))
    return out
