"""Loss tests: CenterPoint targets, each loss ~0 on a perfect prediction and finite on empty targets, WTA mode
selection and masking, decode_detections round trip, uncertainty weighting on known numbers."""

from __future__ import annotations

import math

import pytest
import torch

from drivepipe.config import Config, LossConfig, ModelConfig, PreprocessConfig
from drivepipe.losses import (LOG_SIGMA_RANGE, MultiTaskLoss, detection_loss, draw_heatmap_targets,
                              gaussian_radius, planning_loss, prediction_loss, segmentation_loss,
                              uncertainty_total)
from drivepipe.model.heads.detection import decode_detections
from drivepipe.schema import CATEGORIES

torch.set_num_threads(1)
B, S, A, KM, TF = 2, 32, 3, 4, 6


def make_config(**loss) -> Config:
    pre = PreprocessConfig(bev_size=S, bev_resolution_m=0.5, future_steps=TF)
    return Config(preprocess=pre, model=ModelConfig(num_modes=KM, planning_head=True), loss=LossConfig(**loss))


def make_batch(num_boxes: int = 3, num_agents: int = A, seed: int = 0) -> dict[str, torch.Tensor]:
    """Targets only: boxes far apart (centres inside the 16 m grid), random seg/occ, straight agent futures."""
    g = torch.Generator().manual_seed(seed)
    M = max(num_boxes, 1)
    boxes = torch.zeros(B, M, 9)
    if num_boxes:
        centres = torch.tensor([[-5.3, -4.9], [4.7, 5.2], [5.1, -5.6]])[:num_boxes]
        boxes[:, :num_boxes, :2] = centres
        boxes[:, :num_boxes, 2] = 0.8
        boxes[:, :num_boxes, 3:6] = torch.tensor([4.5, 1.9, 1.6])
        boxes[:, :num_boxes, 6] = torch.tensor([0.3, -2.5, 3.0])[:num_boxes]
        boxes[:, :num_boxes, 7:9] = torch.randn(B, num_boxes, 2, generator=g)
    labels = torch.full((B, M), -1)
    labels[:, :num_boxes] = torch.arange(num_boxes) % len(CATEGORIES)
    Am = max(num_agents, 1)
    fut = torch.cumsum(torch.randn(B, Am, TF, 3, generator=g), dim=2)
    fut_valid = torch.ones(B, Am, TF, dtype=torch.bool)
    fut_valid[:, 0, -2:] = False  # the first agent leaves the log early
    return {
        "boxes": boxes, "box_labels": labels, "box_valid": labels >= 0,
        "seg": (torch.rand(B, 4, S, S, generator=g) > 0.7).to(torch.uint8),
        "occ": (torch.rand(B, 3, S, S, generator=g) > 0.9).to(torch.uint8),
        "agent_fut": fut, "agent_fut_valid": fut_valid & (num_agents > 0),
        "agent_valid": torch.full((B, Am), num_agents > 0),
        "ego_fut": torch.cumsum(torch.rand(B, TF, 3, generator=g), 1),
        "ego_fut_valid": torch.ones(B, TF, dtype=torch.bool),
    }


def perfect_outputs(batch: dict[str, torch.Tensor], cfg: Config) -> dict[str, torch.Tensor]:
    """Outputs that match the batch's targets (logits +-20, winner mode 0 exact and confident)."""
    t = draw_heatmap_targets(batch, cfg)
    reg = torch.zeros(B, 10, S * S)
    for b in range(B):
        m = t.mask[b]
        reg[b][:, t.index[b][m]] = t.reg[b][m].T
    fut = batch["agent_fut"][..., :2]
    traj = fut.unsqueeze(2).repeat(1, 1, KM, 1, 1)
    traj[:, :, 1:] += 3.0 + torch.arange(KM - 1).view(1, 1, -1, 1, 1).float()  # the other modes are off
    mode_logits = torch.full(traj.shape[:3], -20.0)
    mode_logits[..., 0] = 20.0
    sign = lambda x: 40.0 * x.float() - 20.0  # noqa: E731  0/1 -> -20/+20 logits
    return {
        "det.heatmap": torch.where(t.heatmap == 1, 20.0, -20.0), "det.reg": reg.view(B, 10, S, S),
        "seg.logits": sign(batch["seg"]), "occ.logits": sign(batch["occ"]), "pred.traj": traj,
        "pred.log_sigma": torch.full_like(traj, LOG_SIGMA_RANGE[0]), "pred.mode_logits": mode_logits,
        "plan.traj": batch["ego_fut"].clone(),
    }


def test_heatmap_targets_peak_radius_and_regression() -> None:
    cfg = make_config()
    batch = make_batch(num_boxes=1)
    t = draw_heatmap_targets(batch, cfg)
    x, y = -5.3, -4.9
    i, j = math.floor((x + 8) / 0.5), math.floor((y + 8) / 0.5)  # (5, 6)
    assert t.heatmap.shape == (B, len(CATEGORIES), S, S)
    assert torch.nonzero(t.heatmap[0] == 1).tolist() == [[0, i, j]]
    r = int(max(2, math.floor(gaussian_radius(torch.tensor(4.5 / 0.5), torch.tensor(1.9 / 0.5)).item())))
    row = t.heatmap[0, 0, i]
    assert (row[j - r: j + r + 1] > 0).all() and row[j + r + 1:].sum() == 0 and row[: max(j - r, 0)].sum() == 0
    assert t.index[0, 0].item() == i * S + j and t.mask[0, 0]
    want = torch.tensor([(x + 8) / 0.5 - i, (y + 8) / 0.5 - j, 0.8, math.log(4.5), math.log(1.9), math.log(1.6),
                         math.sin(0.3), math.cos(0.3)])
    torch.testing.assert_close(t.reg[0, 0, :8], want)


def test_gaussian_radius_grows_with_size_and_is_clamped() -> None:
    small, big = gaussian_radius(torch.tensor([1.0, 10.0]), torch.tensor([1.0, 4.0]))
    assert 0 < small < big
    batch = make_batch(num_boxes=1)
    batch["boxes"][:, 0, 3:5] = 0.1  # a tiny cone still gets a radius-2 blob
    t = draw_heatmap_targets(batch, make_config())
    assert (t.heatmap[0, 0] > 0).sum().item() == 25


def test_each_loss_minimal_on_perfect_prediction() -> None:
    cfg = make_config()
    batch = make_batch()
    terms = MultiTaskLoss(cfg)(perfect_outputs(batch, cfg), batch)
    for name in ["loss/det/heatmap", "loss/det/box", "loss/seg/bce", "loss/seg/dice", "loss/occ/bce",
                 "loss/pred/wta", "loss/pred/nll", "loss/pred/cls", "loss/plan/l1"]:
        assert terms[name].item() == pytest.approx(0.0, abs=1e-5), name


def test_losses_finite_without_boxes_or_agents() -> None:
    cfg = make_config()
    batch = make_batch(num_boxes=0, num_agents=0)
    outputs = {k: v.requires_grad_() for k, v in perfect_outputs(make_batch(), cfg).items()}
    outputs["pred.traj"] = outputs["pred.traj"][:, :1].detach().requires_grad_()
    outputs["pred.log_sigma"] = outputs["pred.log_sigma"][:, :1].detach().requires_grad_()
    outputs["pred.mode_logits"] = outputs["pred.mode_logits"][:, :1].detach().requires_grad_()
    terms = MultiTaskLoss(cfg)(outputs, batch)
    for name, value in terms.items():
        assert torch.isfinite(value) and value.item() >= 0, name
    assert terms["loss/det/box"].item() == 0 and terms["loss/pred/wta"].item() == 0
    assert terms["loss/det/heatmap"].item() > 0  # the 3 unsupported peaks are still penalised
    terms["loss/total"].backward()
    assert outputs["pred.traj"].grad is not None and torch.isfinite(outputs["pred.traj"].grad).all()


def test_prediction_wta_picks_closest_mode_and_masks_invalid_steps() -> None:
    cfg = make_config()
    batch = make_batch()
    out = perfect_outputs(batch, cfg)
    out["pred.traj"] = out["pred.traj"].flip(2)  # the exact mode is now the last one
    out["pred.traj"][:, 0, :, -2:] += 100.0  # garbage on the first agent's invalid steps
    terms = prediction_loss(out, batch)
    assert terms["loss/pred/wta"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["loss/pred/cls"].item() > 10  # the logits favour mode 0, the winner is mode K-1
    out["pred.mode_logits"] = out["pred.mode_logits"].flip(2)
    assert prediction_loss(out, batch)["loss/pred/cls"].item() == pytest.approx(0.0, abs=1e-5)


def test_plan_loss_wraps_yaw() -> None:
    cfg = make_config()
    batch = make_batch()
    out = perfect_outputs(batch, cfg)
    out["plan.traj"][..., 2] += 2 * math.pi
    assert planning_loss(out, batch)["loss/plan/l1"].item() == pytest.approx(0.0, abs=1e-5)
    out["plan.traj"][..., 0] += 1.0
    assert planning_loss(out, batch)["loss/plan/l1"].item() == pytest.approx(1.0, abs=1e-5)


def test_box_and_seg_losses_respond_to_errors() -> None:
    cfg = make_config()
    batch = make_batch()
    out = perfect_outputs(batch, cfg)
    out["det.reg"] = out["det.reg"] + 0.1  # 10 channels off by 0.1 at every centre
    assert detection_loss(out, batch, cfg)["loss/det/box"].item() == pytest.approx(1.0, abs=1e-5)
    out["seg.logits"] = torch.zeros_like(out["seg.logits"])
    assert segmentation_loss(out, batch)["loss/seg/bce"].item() == pytest.approx(math.log(2), abs=1e-5)


def test_decode_detections_round_trip() -> None:
    cfg = make_config()
    batch = make_batch()
    t = draw_heatmap_targets(batch, cfg)
    out = perfect_outputs(batch, cfg)
    out["det.heatmap"] = torch.logit(t.heatmap.clamp(1e-4, 1 - 1e-4))
    dets = decode_detections(out, cfg, score_threshold=0.5, max_detections=20)
    for b in range(B):
        got = dets[b]
        gt = batch["boxes"][b][batch["box_valid"][b]]
        assert got["boxes"].shape == gt.shape
        order_got, order_gt = got["boxes"][:, 0].argsort(), gt[:, 0].argsort()
        torch.testing.assert_close(got["boxes"][order_got], gt[order_gt], atol=1e-3, rtol=0)
        torch.testing.assert_close(got["labels"][order_got], batch["box_labels"][b][order_gt])
        assert (got["scores"] > 0.99).all()


def test_uncertainty_weighting_known_numbers() -> None:
    losses = {"det": torch.tensor(2.0), "pred": torch.tensor(3.0)}
    log_vars = {"det": torch.tensor(0.5), "pred": torch.tensor(-1.0)}
    want = math.exp(-0.5) * 2.0 * 1.0 + 0.25 + math.exp(1.0) * 3.0 * 0.5 - 0.5
    assert uncertainty_total(losses, log_vars).item() == pytest.approx(want, rel=1e-6)


def test_multitask_loss_uncertainty_mode() -> None:
    cfg = make_config(balancing="uncertainty")
    batch = make_batch()
    criterion = MultiTaskLoss(cfg)
    out = perfect_outputs(batch, cfg)
    out["seg.logits"] = torch.zeros_like(out["seg.logits"])
    result = criterion(out, batch)
    # s = 0 at init: total = sum c_i * L_i with c = 1 (det, seg, occ) or 0.5 (pred, plan).
    kind_c = {"det": 1.0, "seg": 1.0, "occ": 1.0, "pred": 0.5, "plan": 0.5}
    want = sum(result[f"loss/{h}"] * c for h, c in kind_c.items())
    assert result["loss/total"].item() == pytest.approx(want.item(), rel=1e-6)
    assert result["stats/sigma/seg"].item() == 1.0 and not result["stats/sigma/seg"].requires_grad
    result["loss/total"].backward()
    # d/ds (exp(-s) L + s/2) at s = 0 is 0.5 - L: a large seg loss pushes its log-variance up.
    assert criterion.log_vars["seg"].grad.item() == pytest.approx(0.5 - result["loss/seg"].item(), rel=1e-5)


def test_multitask_loss_static_weights_and_names() -> None:
    cfg = make_config(det_weight=2.0, seg_weight=0.5)
    batch = make_batch()
    out = perfect_outputs(batch, cfg)
    out["seg.logits"] = torch.zeros_like(out["seg.logits"])
    out["det.reg"] = out["det.reg"] + 0.1
    result = MultiTaskLoss(cfg)(out, batch)
    det = 0.25 * result["loss/det/box"] + result["loss/det/heatmap"]
    assert result["loss/det"].item() == pytest.approx(det.item())
    want = (2.0 * result["loss/det"] + 0.5 * result["loss/seg"] + result["loss/occ"] + result["loss/pred"]
            + result["loss/plan"])
    assert result["loss/total"].item() == pytest.approx(want.item(), rel=1e-6)
    assert all(k.startswith("loss/") for k in result) and not any(k.startswith("stats/") for k in result)


def test_occupancy_positive_weight_scales_only_occupied_cells():
    from drivepipe.losses import occupancy_loss

    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    base = occupancy_loss({"occ.logits": logits}, {"occ": target})["loss/occ/bce"]
    weighted = occupancy_loss({"occ.logits": logits}, {"occ": target}, pos_weight=5.0)["loss/occ/bce"]
    # every cell costs log 2 at p = 0.5; the one occupied cell counts 5x: (5 + 3) / 4 log 2
    assert base.item() == pytest.approx(math.log(2), abs=1e-6)
    assert weighted.item() == pytest.approx(8 / 4 * math.log(2), abs=1e-6)
