"""Multi-task losses: one pure function per head returning named terms, plus `MultiTaskLoss` that weights them
(static weights from LossConfig or Kendall et al. 2018 homoscedastic-uncertainty balancing).

Shape legend: B = batch, K = classes, S = bev_size, M = boxes (padded), A = agents, Km = modes, Tf = future steps.
Every term is a scalar tensor, finite for empty targets and connected to the graph (zero-valued if nothing to fit).
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from drivepipe.config import Config, LossConfig
from drivepipe.schema import CATEGORIES

GAUSSIAN_MIN_OVERLAP = 0.1  # CenterPoint's IoU target for the CornerNet radius
GAUSSIAN_MIN_RADIUS = 2  # cells
LOG_SIGMA_RANGE = (-3.0, 5.0)  # clamp for the trajectory NLL: keeps it bounded below on a perfect fit
HEAD_KIND = {"det": "classification", "seg": "classification", "occ": "classification",
             "pred": "regression", "plan": "regression"}


class HeatmapTargets(NamedTuple):
    """heatmap (B, K, S, S) in [0, 1]; reg (B, M, 10) per-box regression target; index (B, M) flat cell i*S+j of each
    box centre; mask (B, M) bool: valid box with its centre inside the grid."""

    heatmap: torch.Tensor
    reg: torch.Tensor
    index: torch.Tensor
    mask: torch.Tensor


def gaussian_radius(length_cells: torch.Tensor, width_cells: torch.Tensor,
                    min_overlap: float = GAUSSIAN_MIN_OVERLAP) -> torch.Tensor:
    """CornerNet radius (cells) so that a corner shift keeps IoU >= min_overlap: min of the three quadratic cases."""
    h, w, o = length_cells, width_cells, min_overlap
    b1, c1 = h + w, w * h * (1 - o) / (1 + o)
    r1 = (b1 + torch.sqrt((b1 ** 2 - 4 * c1).clamp(min=0))) / 2
    b2, c2 = 2 * (h + w), (1 - o) * w * h
    r2 = (b2 + torch.sqrt((b2 ** 2 - 16 * c2).clamp(min=0))) / 2
    b3, c3 = -2 * o * (h + w), (o - 1) * w * h
    r3 = (b3 + torch.sqrt((b3 ** 2 - 16 * o * c3).clamp(min=0))) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def draw_heatmap_targets(batch: dict[str, Any], cfg: Config) -> HeatmapTargets:
    """CenterPoint targets from batch boxes (B, M, 9), box_labels (B, M), box_valid (B, M); vectorised over boxes.

    Each valid box draws a Gaussian (sigma = (2r + 1) / 6, r = CornerNet radius of its size in cells, >= 2) around
    the cell holding its centre into its class channel (max where boxes overlap); the centre cell is exactly 1.
    """
    pre = cfg.preprocess
    S, res, E = pre.bev_size, pre.bev_resolution_m, pre.bev_extent_m
    boxes_BM9 = batch["boxes"].float()
    labels_BM = batch["box_labels"]
    B, M = labels_BM.shape
    grid_pos_BM2 = (boxes_BM9[..., :2] + E) / res
    ij_BM2 = torch.floor(grid_pos_BM2).long()
    mask_BM = batch["box_valid"] & (labels_BM >= 0) & ((ij_BM2 >= 0) & (ij_BM2 < S)).all(-1)
    radius_BM = gaussian_radius(boxes_BM9[..., 3] / res, boxes_BM9[..., 4] / res).floor()
    radius_BM = radius_BM.clamp(min=GAUSSIAN_MIN_RADIUS).masked_fill(~mask_BM, 0).long()
    r_max = int(radius_BM.max()) if mask_BM.any() else 0
    offs = torch.arange(-r_max, r_max + 1, device=labels_BM.device)
    di, dj = torch.meshgrid(offs, offs, indexing="ij")  # (W, W)
    sigma_BM = (2 * radius_BM + 1).float() / 6
    gauss_BMWW = torch.exp(-(di ** 2 + dj ** 2).float() / (2 * sigma_BM[..., None, None] ** 2))
    ci, cj = ij_BM2[..., 0, None, None] + di, ij_BM2[..., 1, None, None] + dj  # (B, M, W, W)
    r = radius_BM[..., None, None]
    keep = (mask_BM[..., None, None] & (di.abs() <= r) & (dj.abs() <= r)
            & (ci >= 0) & (ci < S) & (cj >= 0) & (cj < S))
    b_idx = torch.arange(B, device=labels_BM.device).view(B, 1, 1, 1)
    flat = ((b_idx * len(CATEGORIES) + labels_BM.clamp(min=0)[..., None, None]) * S + ci) * S + cj
    heatmap = boxes_BM9.new_zeros(B * len(CATEGORIES) * S * S)
    heatmap.scatter_reduce_(0, flat[keep], gauss_BMWW[keep], reduce="amax", include_self=True)
    yaw = boxes_BM9[..., 6]
    reg_BM10 = torch.cat([grid_pos_BM2 - ij_BM2.float(), boxes_BM9[..., 2:3],
                          boxes_BM9[..., 3:6].clamp(min=1e-3).log(), yaw.sin().unsqueeze(-1),
                          yaw.cos().unsqueeze(-1), boxes_BM9[..., 7:9]], dim=-1)
    index_BM = (ij_BM2[..., 0] * S + ij_BM2[..., 1]).clamp(0, S * S - 1)
    return HeatmapTargets(heatmap.view(B, len(CATEGORIES), S, S), reg_BM10, index_BM, mask_BM)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """CornerNet penalty-reduced focal loss, summed over cells and normalised by the number of peaks (>= 1)."""
    pos = target.eq(1).float()
    log_p, log_1mp = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = log_p.exp()
    pos_term = -log_p * (1 - p) ** alpha * pos
    neg_term = -log_1mp * p ** alpha * (1 - target) ** beta * (1 - pos)
    return (pos_term.sum() + neg_term.sum()) / pos.sum().clamp(min=1)


def detection_loss(outputs: dict[str, torch.Tensor], batch: dict[str, Any], cfg: Config) -> dict[str, torch.Tensor]:
    """loss/det/heatmap (focal) and loss/det/box (L1 over the 10 regression channels at centre cells, per object)."""
    heat, reg = outputs["det.heatmap"].float(), outputs["det.reg"].float()
    t = draw_heatmap_targets(batch, cfg)
    B, R = reg.shape[:2]
    pred_BMR = reg.flatten(2).gather(2, t.index.unsqueeze(1).expand(B, R, -1)).transpose(1, 2)
    mask = t.mask.unsqueeze(-1).float()
    box = ((pred_BMR - t.reg).abs() * mask).sum() / t.mask.sum().clamp(min=1)
    return {"loss/det/heatmap": focal_loss(heat, t.heatmap, cfg.loss.focal_alpha, cfg.loss.focal_beta),
            "loss/det/box": box}


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per channel over the whole batch (B, C, S, S), averaged over channels with any positive cell.

    Channels empty in the whole batch are left to the BCE term: their Dice would demand p ~ 0 on every cell and
    dominate the gradient. Zero (graph-connected) when no channel has a positive.
    """
    p = logits.sigmoid().transpose(0, 1).flatten(1)  # (C, B * S * S)
    t = target.transpose(0, 1).flatten(1)
    present = t.sum(-1) > 0
    dice = (2 * (p * t).sum(-1) + eps) / (p.sum(-1) + t.sum(-1) + eps)
    return ((1 - dice) * present).sum() / present.sum().clamp(min=1)


def segmentation_loss(outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """loss/seg/bce and loss/seg/dice against batch seg (B, Cs, S, S) 0/1."""
    logits, target = outputs["seg.logits"].float(), batch["seg"].float()
    return {"loss/seg/bce": F.binary_cross_entropy_with_logits(logits, target),
            "loss/seg/dice": soft_dice_loss(logits, target)}


def occupancy_loss(outputs: dict[str, torch.Tensor], batch: dict[str, Any],
                   pos_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """loss/occ/bce against batch occ (B, 1 + To, S, S) 0/1. Occupied cells are a few percent of the grid, so their
    term is weighted by `pos_weight` (loss.occ_pos_weight); with 1.0 the head learns to predict "free" everywhere."""
    logits = outputs["occ.logits"].float()
    weight = torch.tensor(pos_weight, device=logits.device)
    return {"loss/occ/bce": F.binary_cross_entropy_with_logits(logits, batch["occ"].float(), pos_weight=weight)}


def prediction_loss(outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Winner-takes-all over modes by ADE on valid future steps.

    loss/pred/wta: L1 (summed over x, y) of the winning mode per valid step; loss/pred/nll: Laplace NLL of the
    winner with pred.log_sigma (clamped to LOG_SIGMA_RANGE, per coordinate,
    shifted to be >= 0); loss/pred/cls: cross-entropy of
    pred.mode_logits toward the winner. Agents without a valid future step are ignored.
    """
    traj = outputs["pred.traj"].float()  # (B, A, Km, Tf, 2)
    log_sigma = outputs["pred.log_sigma"].float()
    mode_logits = outputs["pred.mode_logits"].float()  # (B, A, Km)
    gt_BAT2 = batch["agent_fut"][..., :2].float()
    valid_BAT = (batch["agent_fut_valid"] & batch["agent_valid"].unsqueeze(-1)).float()
    num_steps_BA = valid_BAT.sum(-1)
    agent_ok_BA = num_steps_BA > 0
    dist_BAKT = (traj - gt_BAT2.unsqueeze(2)).norm(dim=-1)
    ade_BAK = (dist_BAKT * valid_BAT.unsqueeze(2)).sum(-1) / num_steps_BA.clamp(min=1).unsqueeze(-1)
    winner_BA = ade_BAK.detach().argmin(-1)
    pick = winner_BA[..., None, None, None].expand(-1, -1, 1, *traj.shape[-2:])
    err_BAT2 = (traj.gather(2, pick).squeeze(2) - gt_BAT2).abs()
    ls_BAT2 = log_sigma.gather(2, pick).squeeze(2).clamp(*LOG_SIGMA_RANGE)
    # Laplace NLL |e| / b + log b (+ log 2) shifted by its minimum over the clamped range, so it is >= 0 and exactly 0
    # on a perfect, maximally confident prediction; a loss that can go negative would let uncertainty weighting
    # run its log-variance to -inf. The shift is a constant: gradients are unchanged.
    nll_BAT2 = err_BAT2 * torch.exp(-ls_BAT2) + (ls_BAT2 - LOG_SIGMA_RANGE[0])
    num_valid = valid_BAT.sum().clamp(min=1)
    wta = (err_BAT2.sum(-1) * valid_BAT).sum() / num_valid
    nll = (nll_BAT2.mean(-1) * valid_BAT).sum() / num_valid
    # Cross-entropy by hand: NLLLoss is on torch's list of CUDA ops without a deterministic mode.
    ce_BA = -mode_logits.log_softmax(-1).gather(-1, winner_BA.unsqueeze(-1)).squeeze(-1)
    cls = (ce_BA * agent_ok_BA).sum() / agent_ok_BA.sum().clamp(min=1)
    return {"loss/pred/wta": wta, "loss/pred/nll": nll, "loss/pred/cls": cls}


def planning_loss(outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """loss/plan/l1: L1 of x, y (m) and wrapped yaw (rad) vs ego_fut over ego_fut_valid steps."""
    plan, gt = outputs["plan.traj"].float(), batch["ego_fut"].float()  # (B, Tf, 3)
    valid_BT = batch["ego_fut_valid"].float()
    d_yaw = torch.atan2(torch.sin(plan[..., 2] - gt[..., 2]), torch.cos(plan[..., 2] - gt[..., 2]))
    err_BT = (plan[..., :2] - gt[..., :2]).abs().sum(-1) + d_yaw.abs()
    return {"loss/plan/l1": (err_BT * valid_BT).sum() / valid_BT.sum().clamp(min=1)}


def head_totals(terms: dict[str, torch.Tensor], loss_cfg: LossConfig) -> dict[str, torch.Tensor]:
    """Per-head totals loss/<head> from the terms, with the within-head weights of LossConfig."""
    w = {"loss/det/box": loss_cfg.box_weight, "loss/seg/dice": loss_cfg.dice_weight,
         "loss/pred/nll": loss_cfg.nll_weight, "loss/pred/cls": loss_cfg.mode_cls_weight}
    totals: dict[str, torch.Tensor] = {}
    for name, value in terms.items():
        head = name.split("/")[1]
        totals[f"loss/{head}"] = totals.get(f"loss/{head}", 0.0) + w.get(name, 1.0) * value
    return totals


def uncertainty_total(head_losses: dict[str, torch.Tensor], log_vars: dict[str, torch.Tensor]) -> torch.Tensor:
    """Kendall et al. 2018: sum_i exp(-s_i) * L_i * c_i + s_i / 2, c_i = 0.5 regression, 1 classification."""
    total = 0.0
    for head, loss in head_losses.items():
        s = log_vars[head]
        c = 0.5 if HEAD_KIND[head] == "regression" else 1.0
        total = total + torch.exp(-s) * loss * c + s / 2
    return total


class MultiTaskLoss(nn.Module):
    """outputs, batch -> {loss/<head>/<term>, loss/<head>, loss/total[, stats/sigma/<head>]}.

    Heads present in `outputs` are scored (plan only when plan.traj exists). With loss.balancing == "uncertainty"
    holds one learned log-variance s_head (init 0) per head; add this module's parameters to the optimizer.
    """

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        lc = cfg.loss
        self.static_weights = {"det": lc.det_weight, "seg": lc.seg_weight, "occ": lc.occ_weight,
                               "pred": lc.pred_weight, "plan": lc.plan_weight}
        self.uncertainty = lc.balancing == "uncertainty"
        if self.uncertainty:
            heads = [h for h in HEAD_KIND if h != "plan" or cfg.model.planning_head]
            self.log_vars = nn.ParameterDict({h: nn.Parameter(torch.zeros(())) for h in heads})
            if any(w != 1.0 for w in self.static_weights.values()):
                warnings.warn("loss.*_weight per head has no effect with loss.balancing: uncertainty", stacklevel=2)

    def forward(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        terms = {**detection_loss(outputs, batch, self.cfg), **segmentation_loss(outputs, batch),
                 **occupancy_loss(outputs, batch, self.cfg.loss.occ_pos_weight), **prediction_loss(outputs, batch)}
        if "plan.traj" in outputs:
            terms.update(planning_loss(outputs, batch))
        totals = head_totals(terms, self.cfg.loss)
        per_head = {name.split("/")[1]: value for name, value in totals.items()}
        result = {**terms, **totals}
        if self.uncertainty:
            log_vars = {h: self.log_vars[h] for h in per_head}
            result["loss/total"] = uncertainty_total(per_head, log_vars)
            for h, s in log_vars.items():
                result[f"stats/sigma/{h}"] = torch.exp(0.5 * s.detach())
        else:
            result["loss/total"] = sum(self.static_weights[h] * v for h, v in per_head.items())
        return result
