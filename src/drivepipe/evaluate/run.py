"""The `evaluate` stage: load `checkpoints/<experiment>/best` (or latest), run it on the val split, write
metrics.json, plot data, exports, pictures and report.md under a fixed output folder."""

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
    dataset = CacheDataset(cache_dir, cfg, "val")
    if len(dataset) == 0:
        raise DataError(cache_dir, "the cache has no val samples to evaluate (the dataset is too small for a val "
                        "split: add logs or scenes, or lower preprocess.window_stride)")
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.evaluate.batch_size, shuffle=False,
                                         collate_fn=collate, num_workers=0)
    results, evaluator = evaluate_model(model, loader, cfg)
    pr_curves = results.pop("_pr_curves")
    torch.manual_seed(cfg.train.seed)
    untrained, _ = evaluate_model(build_model(cfg), loader, cfg, export=False)
    results["baseline"]["untrained_model"] = {"mAP": untrained["detection"]["mAP"],
                                              "mIoU": untrained["segmentation"]["mIoU"],
                                              "minADE": untrained["prediction"]["minADE"]}
    results["num_samples"] = len(dataset)
    results["checkpoint"] = {"path": ckpt.name, "step": meta.get("step"), "git_commit": meta.get("git_commit")}
    for sub in ("exports", "pictures", "plots"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
    write_metrics(out_dir, results, pr_curves, cfg.preprocess.traj_dt_s)
    write_exports(out_dir / "exports", evaluator.detections, evaluator.ground_truth, evaluator.trajectories,
                  cfg.model.use_camera, cfg.model.use_lidar)
    pictures = _pictures(model, dataset, cfg, out_dir / "pictures")
    write_report(out_dir, results, [str(p.relative_to(out_dir)) for p in pictures], ckpt.name)
    atomic_write_json(out_dir / "resolved_config.json", to_dict(cfg))
    log.info("evaluate: %d val samples in %.1f s; mAP %.3f mIoU %.3f minADE %s", len(dataset),
             time.perf_counter() - t0, results["detection"]["mAP"], results["segmentation"]["mIoU"],
             results["prediction"]["minADE"])
    return results


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
