"""The `evaluate` stage: load `checkpoints/<experiment>/best` (or latest; `best` is chosen on the val split), run
it on the held-out test split, write metrics.json, breakdowns.json, plot data, exports, pictures and report.md under
a fixed output folder."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drivepipe.config import Config, to_dict
from drivepipe.data.dataset import CacheDataset
from drivepipe.errors import DataError
from drivepipe.evaluate.export import write_exports
from drivepipe.evaluate.offline import evaluate_model
from drivepipe.evaluate.pictures import bev_picture, camera_picture
from drivepipe.evaluate.report import write_metrics, write_report
from drivepipe.model.heads.detection import decode_detections
from drivepipe.model.model import build_model
from drivepipe.model.weights import load_trained_model
from drivepipe.sample import collate
from drivepipe.utils.io import atomic_write_json

log = logging.getLogger(__name__)


def run_evaluate(cfg: Config, cache_dir: Path, ckpt_root: Path, out_dir: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    model, ckpt, meta = load_trained_model(cfg, ckpt_root, cfg.evaluate.checkpoint)
    dataset = CacheDataset(cache_dir, cfg, "test")  # held-out logs; `best` was chosen on val, never on these
    if len(dataset) == 0:
        raise DataError(cache_dir, "the cache has no test samples to evaluate (the test logs have no full window: "
                        "add scenes per log, or lower preprocess.window_stride)")
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.evaluate.batch_size, shuffle=False,
                                         collate_fn=collate, num_workers=0)
    details, evaluator = evaluate_model(model, loader, cfg)
    pr_curves = details.pop("_pr_curves")
    torch.manual_seed(cfg.train.seed)
    untrained, _ = evaluate_model(build_model(cfg), loader, cfg, export=False)
    details["baseline"]["untrained_model"] = {"mAP": untrained["detection"]["mAP"],
                                              "mIoU": untrained["segmentation"]["mIoU"],
                                              "minADE_K": untrained["prediction"]["minADE"]}
    results = headline_metrics(evaluator, details)
    results["checkpoint"] = {"path": ckpt.name, "step": meta.get("step"), "git_commit": meta.get("git_commit")}
    breakdowns = {**evaluator.book.breakdowns(), **details}
    for sub in ("exports", "pictures", "plots"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
    write_metrics(out_dir, results, breakdowns, pr_curves, cfg.preprocess.traj_dt_s)
    write_exports(out_dir / "exports", evaluator.detections, evaluator.ground_truth, evaluator.trajectories,
                  cfg.model.use_camera, cfg.model.use_lidar)
    pictures = _pictures(model, dataset, cfg, out_dir / "pictures")
    write_report(out_dir, results, breakdowns, [str(p.relative_to(out_dir)) for p in pictures], ckpt.name)
    atomic_write_json(out_dir / "resolved_config.json", to_dict(cfg))
    log.info("evaluate: %d test samples in %.1f s; mAP %s mIoU %s minFDE_K %s", len(dataset),
             time.perf_counter() - t0, results["detection"]["mAP"], results["segmentation"]["mIoU"],
             results["prediction"]["minFDE_K"])
    return results


def headline_metrics(evaluator: Any, details: dict[str, Any]) -> dict[str, Any]:
    """metrics.json: the split and counts, the headline metrics with `_ci95` intervals, the baselines."""
    book = evaluator.book
    out: dict[str, Any] = {"split": "test", "counts": book.counts(), **book.headline()}
    base = details["baseline"]
    out["baseline"]["empty_detector"] = {"mAP": base["empty_detector"]["mAP"]}
    out["baseline"]["untrained_model"] = base["untrained_model"]
    return out


@torch.no_grad()
def _pictures(model: torch.nn.Module, dataset: CacheDataset, cfg: Config, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(min(cfg.evaluate.num_pictures, len(dataset))):
        sample = dataset[i]
        batch = collate([sample])
        outputs = model(batch)
        det = decode_detections(outputs, cfg, 0.3, cfg.model.max_detections)[0]
        item = {k: v for k, v in sample.items() if k != "meta"}
        item["agents"] = np.ones(len(sample["agent_labels"]), dtype=bool)
        pred = {"seg": outputs["seg.logits"][0].sigmoid().numpy(), "occ": outputs["occ.logits"][0].sigmoid().numpy(),
                "boxes": det["boxes"].numpy(), "traj": outputs["pred.traj"][0].numpy(),
                "probs": outputs["pred.mode_logits"][0].softmax(-1).numpy()}
        token = sample["meta"]["token"]
        bev = out / f"{i:02d}_{token}_bev.png"
        bev_picture(bev, item, pred, cfg.preprocess.seg_classes, cfg.preprocess.bev_extent_m)
        cams = out / f"{i:02d}_{token}_cameras.png"
        camera_picture(cams, item, pred["boxes"], cfg.preprocess.cameras)
        paths += [bev, cams]
    return paths
