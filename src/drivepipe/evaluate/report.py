"""Fixed-path outputs of the evaluate stage: metrics.json (a DVC metric), plot data, and report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drivepipe.utils.io import atomic_write_json

MODE_DEFINITIONS = (
    "A predicted mode is *confident* when its probability is at least `evaluate.mode_score_threshold`. "
    "Mode precision = confident modes whose final displacement (FDE) to the ground truth is <= "
    "`evaluate.miss_threshold_m` / all confident modes. Mode recall = agents with at least one such confident mode "
    "/ all agents with a valid future. Collision rate = share of agents whose most likely predicted trajectory "
    "overlaps another agent's ground-truth footprint at the same future step.")


def write_metrics(out_dir: Path, results: dict[str, Any], pr_curves: dict, dt_s: float) -> None:
    """metrics.json plus DVC plot files: plots/pr/<class>.json and plots/displacement_by_horizon.json."""
    atomic_write_json(out_dir / "metrics.json", results)
    for name, curve in pr_curves.items():
        rows = [{"recall": r, "precision": p} for r, p in zip(curve["recall"], curve["precision"], strict=True)]
        atomic_write_json(out_dir / "plots" / "pr" / f"{name}.json", rows)
    pred = results["prediction"]
    cv = results["baseline"]["constant_velocity"]
    rows = []
    for t, (ade, fde) in enumerate(zip(pred.get("ade_by_horizon") or [], pred.get("fde_by_horizon") or [],
                                       strict=True)):
        rows.append({"horizon_s": round((t + 1) * dt_s, 3), "ade": ade, "fde": fde,
                     "cv_ade": (cv.get("ade_by_horizon") or [None] * (t + 1))[t],
                     "cv_fde": (cv.get("fde_by_horizon") or [None] * (t + 1))[t]})
    atomic_write_json(out_dir / "plots" / "displacement_by_horizon.json", rows)


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def write_report(out_dir: Path, results: dict[str, Any], pictures: list[str], checkpoint: str) -> None:
    """A short markdown report: the headline table with baselines beside the model, breakdowns, pictures."""
    d, s, o, p, base = (results["detection"], results["segmentation"], results["occupancy"], results["prediction"],
                        results["baseline"])
    untrained = base.get("untrained_model", {})
    cv, ca = base["constant_velocity"], base["constant_acceleration"]
    lines = [
        "# Evaluation report", "", f"Checkpoint: `{checkpoint}`; split: val ({results['num_samples']} samples).", "",
        "| metric | model | untrained model | baseline |", "|---|---|---|---|",
        f"| detection mAP | {_fmt(d['mAP'])} | {_fmt(untrained.get('mAP'))} | empty detector {_fmt(base['empty_detector']['mAP'])} |",
        f"| detection NDS-style | {_fmt(d['NDS'])} | | |",
        f"| segmentation mIoU | {_fmt(s['mIoU'])} | {_fmt(untrained.get('mIoU'))} | |",
        f"| occupancy IoU / acc / recall | {_fmt(o['iou'])} / {_fmt(o['accuracy'])} / {_fmt(o['recall'])} | | |",
        f"| minADE (K) / minFDE (K) | {_fmt(p['minADE'])} / {_fmt(p['minFDE'])} | | CV {_fmt(cv['minADE'])} / {_fmt(cv['minFDE'])}; CA {_fmt(ca['minADE'])} / {_fmt(ca['minFDE'])} |",
        f"| minADE (1) / minFDE (1) | {_fmt(p['minADE_1'])} / {_fmt(p['minFDE_1'])} | | |",
        f"| miss rate @2 m | {_fmt(p['miss_rate_2m'])} | | CV {_fmt(cv['miss_rate_2m'])} |",
        f"| mode precision / recall | {_fmt(p['mode_precision'])} / {_fmt(p['mode_recall'])} | | |",
        f"| collision rate | {_fmt(p['collision_rate'])} | | CV {_fmt(cv['collision_rate'])} |", "",
        MODE_DEFINITIONS, "", "## Per class (AP)", "", "| class | AP | GT boxes |", "|---|---|---|",
    ]
    lines += [f"| {c} | {_fmt(v['AP'])} | {v['num_gt']} |" for c, v in d["per_class"].items()]
    for kind, groups in results["breakdown"].items():
        lines += ["", f"## By {kind.replace('_', ' ')}", "", "| name | mAP | mIoU | occ IoU | minADE | agents |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {n} | {_fmt(g['mAP'])} | {_fmt(g['mIoU'])} | {_fmt(g['occupancy_iou'])} | {_fmt(g['minADE'])} "
                  f"| {g['num_agents']} |" for n, g in groups.items()]
    lines += ["", "## Pictures", ""] + [f"![{Path(p).stem}]({p})" for p in pictures]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
