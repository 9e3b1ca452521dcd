"""The evaluate stage end to end on the tiny synthetic pipeline: required metric keys and intervals, baselines,
exports that round-trip to the same mAP, pictures and report, different weights giving different metrics, and
`drivepipe compare` on those two real runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from drivepipe.evaluate.export import records_to_arrays
from drivepipe.evaluate.run import run_evaluate
from drivepipe.metrics import DetectionMetric

HEADLINE = ["detection.mAP", "detection.NDS", "segmentation.mIoU", "occupancy.iou_near_15m", "occupancy.iou_grid",
            "prediction.minADE_1", "prediction.minFDE_1", "prediction.minADE_K", "prediction.minFDE_K",
            "prediction.miss_rate_endpoint_K", "prediction.miss_rate_anypoint_K", "prediction.moving_minFDE_K",
            "end_to_end.EPA", "baseline.constant_velocity.minFDE_K", "baseline.constant_acceleration.minFDE_1"]
REQUIRED = [*HEADLINE, "baseline.empty_detector.mAP", "baseline.untrained_model.mAP", "counts.scenes",
            "counts.distinct_objects"]


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d[part]
    return d


@pytest.fixture(scope="module")
def evaluated(tiny_trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate") / "reports"
    results = run_evaluate(tiny_trained["cfg"], tiny_trained["cache"], tiny_trained["models"], out)
    return out, results


@pytest.mark.slow
def test_metrics_json_has_every_required_key(evaluated):
    out, results = evaluated
    on_disk = json.loads((out / "metrics.json").read_text())
    for key in REQUIRED:
        _get(on_disk, key)  # raises KeyError when missing
    for key in HEADLINE:  # every headline number has an interval around it
        section, name = key.rsplit(".", 1)
        value, ci = _get(on_disk, key), _get(on_disk, section)[f"{name}_ci95"]
        if value is not None and ci is not None:
            assert ci[0] - 1e-9 <= ci[1] and len(ci) == 2
    assert on_disk["split"] == "test" and on_disk["baseline"]["empty_detector"]["mAP"] == 0.0
    assert 0.0 <= on_disk["detection"]["mAP"] <= 1.0 and on_disk["counts"]["scenes"] >= 1
    breakdowns = json.loads((out / "breakdowns.json").read_text())
    assert set(breakdowns["breakdown"]) == {"location", "scenario_type", "time_of_day", "weather"}
    assert "unknown" not in breakdowns["breakdown"]["weather"]  # synthetic logs carry their conditions
    assert {"detection_per_class", "detection_per_distance_band", "prediction_by_motion"} <= set(breakdowns)
    assert on_disk == json.loads(json.dumps(results))


@pytest.mark.slow
def test_exports_round_trip_to_the_same_map(evaluated):
    out, results = evaluated
    dets = json.loads((out / "exports" / "detections.json").read_text())
    gts = json.loads((out / "exports" / "ground_truth.json").read_text())
    assert dets["meta"]["frame"] == "ego" and set(dets["results"]) == set(gts["results"])
    first = next(iter(dets["results"].values()))
    if first:
        assert set(first[0]) == {"sample_token", "translation", "size", "rotation", "velocity", "detection_name",
                                 "detection_score", "attribute_name"}
    metric = DetectionMetric()
    for token in sorted(gts["results"]):
        boxes, labels, scores = records_to_arrays(dets["results"][token])
        gt_boxes, gt_labels, _ = records_to_arrays(gts["results"][token])
        metric.update(boxes, labels, scores, gt_boxes, gt_labels)
    assert metric.compute()["mAP"] == pytest.approx(results["detection"]["mAP"], abs=1e-6)
    trajs = json.loads((out / "exports" / "trajectories.json").read_text())["results"]
    agents = [a for v in trajs.values() for a in v]
    assert agents and {"modes", "mode_probabilities", "ground_truth", "valid"} <= set(agents[0])
    assert np.isclose(sum(agents[0]["mode_probabilities"]), 1.0, atol=1e-3)


@pytest.mark.slow
def test_pictures_plots_and_report(evaluated):
    out, _ = evaluated
    pngs = sorted(p.name for p in (out / "pictures").glob("*.png"))
    assert any(p.endswith("_bev.png") for p in pngs) and any(p.endswith("_cameras.png") for p in pngs)
    report = (out / "report.md").read_text()
    assert "detection mAP" in report and "Mode precision" in report and "_bev.png" in report
    rows = json.loads((out / "plots" / "displacement_by_horizon.json").read_text())
    assert rows and {"horizon_s", "ade", "fde", "cv_ade"} <= set(rows[0])
    assert list((out / "plots" / "pr").glob("*.json"))


@pytest.mark.slow
def test_other_weights_give_other_metrics(tiny_trained, evaluated, tmp_path):
    """A checkpoint with perturbed weights (stand-in for another training run) must change the numbers."""
    import shutil

    from safetensors.torch import save_file

    from drivepipe.train.checkpoint import load_model_weights
    from drivepipe.utils.io import atomic_write_json, sha256_file

    models = tmp_path / "models"
    shutil.copytree(tiny_trained["models"], models)
    for which in ("best", "latest"):
        ckpt = models / tiny_trained["cfg"].train.experiment / which
        state, meta = load_model_weights(ckpt)
        torch.manual_seed(1)
        save_file({k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()},
                  str(ckpt / "model.safetensors"))
        meta["sha256"]["model.safetensors"] = sha256_file(ckpt / "model.safetensors")
        atomic_write_json(ckpt / "meta.json", meta)
    other = run_evaluate(tiny_trained["cfg"], tiny_trained["cache"], models, tmp_path / "reports")
    out, base = evaluated
    assert other["segmentation"]["mIoU"] != base["segmentation"]["mIoU"] or \
        other["prediction"]["minADE_K"] != base["prediction"]["minADE_K"]
    _compare_two_commits(tmp_path / "repo", out / "metrics.json", tmp_path / "reports" / "metrics.json")


def _compare_two_commits(repo, first, second):
    """`drivepipe compare HEAD~1 HEAD` on the two real runs committed one after the other in a git repo."""
    import shutil
    import subprocess

    from drivepipe.cli.main import main

    (repo / "reports/evaluate").mkdir(parents=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    for f in (first, second):
        shutil.copy(f, repo / "reports/evaluate/metrics.json")
        subprocess.run([*git, "-C", str(repo), "add", "-A"], check=True)
        subprocess.run([*git, "-C", str(repo), "commit", "-qm", "run"], check=True)
    from drivepipe.evaluate.compare import compare, load_metrics

    rows = compare(load_metrics("HEAD~1", "reports/evaluate/metrics.json", repo),
                   load_metrics("HEAD", "reports/evaluate/metrics.json", repo))
    by_name = {r["metric"]: r for r in rows}
    assert {"detection.mAP", "segmentation.mIoU", "prediction.minFDE_K", "end_to_end.EPA"} <= set(by_name)
    assert by_name["segmentation.mIoU"]["a"] == json.loads(first.read_text())["segmentation"]["mIoU"]
    assert all(r["verdict"] in {"outside noise", "within noise", "no interval"} for r in rows)
    assert main(["compare", "HEAD~1", "HEAD", "--repo", str(repo)]) == 0
    assert main(["compare", "no-such-experiment", "HEAD", "--repo", str(repo)]) == 2


@pytest.mark.slow
def test_evaluation_leaves_autograd_enabled(evaluated):
    assert torch.is_grad_enabled()  # a global switch would break any training later in the same process


@pytest.mark.slow
def test_trainer_validation_reports_the_evaluate_metrics(evaluated, tiny_trained):
    """One set of metric definitions: the trainer's validation of the evaluated checkpoint gives the same mAP, mIoU,
    occupancy IoU and minADE as the evaluate stage (so `best` is picked by what evaluate reports)."""
    from drivepipe.data.dataset import CacheDataset
    from drivepipe.losses import MultiTaskLoss
    from drivepipe.model.weights import load_trained_model
    from drivepipe.sample import collate
    from drivepipe.train.validate import validate

    _, results = evaluated
    cfg = tiny_trained["cfg"]
    model, _, _ = load_trained_model(cfg, tiny_trained["models"], cfg.evaluate.checkpoint)
    # validation runs on val; here it runs on the test split that evaluate reports, to compare the definitions
    loader = torch.utils.data.DataLoader(CacheDataset(tiny_trained["cache"], cfg, "test"), batch_size=3,
                                         collate_fn=collate)
    val = validate(model, MultiTaskLoss(cfg), loader, torch.device("cpu"), cfg)
    assert val["val/mAP"] == pytest.approx(results["detection"]["mAP"], abs=1e-5)
    assert val["val/seg_iou"] == pytest.approx(results["segmentation"]["mIoU"], abs=1e-5)
    assert val["val/occ_iou"] == pytest.approx(results["occupancy"]["iou_grid"], abs=1e-5)
    assert val["val/min_ade"] == pytest.approx(results["prediction"]["minADE_K"], abs=1e-5)
