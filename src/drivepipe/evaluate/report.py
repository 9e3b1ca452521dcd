"""Fixed-path outputs of the evaluate stage: metrics.json (headline metrics with intervals, a DVC metric),
breakdowns.json (per class / band / location / scenario type / motion), plot data, and report.md."""

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


def write_metrics(out_dir: Path, results: dict[str, Any], breakdowns: dict[str, Any], pr_curves: dict,
                  dt_s: float) -> None:
    """metrics.json (headline + intervals + counts), breakdowns.json, and DVC plot files: plots/pr/<class>.json and
    plots/displacement_by_horizon.json."""
    atomic_write_json(out_dir / "metrics.json", results)
    atomic_write_json(out_dir / "breakdowns.json", breakdowns)
    for name, curve in pr_curves.items():
        rows = [{"recall": r, "precision": p} for r, p in zip(curve["recall"], curve["precision"], strict=True)]
        atomic_write_json(out_dir / "plots" / "pr" / f"{name}.json", rows)
    pred = breakdowns["prediction"]
    cv = breakdowns["baseline"]["constant_velocity"]
    rows = []
    for t, (ade, fde) in enumerate(zip(pred.get("ade_by_horizon") or [], pred.get("fde_by_horizon") or [],
                                       strict=True)):
        rows.append({"horizon_s": round((t + 1) * dt_s, 3), "ade": ade, "fde": fde,
                     "cv_ade": (cv.get("ade_by_horizon") or [None] * (t + 1))[t],
                     "cv_fde": (cv.get("fde_by_horizon") or [None] * (t + 1))[t]})
    atomic_write_json(out_dir / "plots" / "displacement_by_horizon.json", rows)


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def _ci(section: dict[str, Any], name: str) -> str:
    """`value [lo, hi]` of a headline metric."""
    ci = section.get(f"{name}_ci95")
    return _fmt(section.get(name)) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _headline_rows(r: dict[str, Any]) -> list[str]:
    d, s, o, p, e, base = (r["detection"], r["segmentation"], r["occupancy"], r["prediction"], r["end_to_end"],
                           r["baseline"])
    cv, ca, untrained = base["constant_velocity"], base["constant_acceleration"], base.get("untrained_model", {})
    return [
        "| metric | model [95 % CI] | baselines |", "|---|---|---|",
        f"| detection mAP | {_ci(d, 'mAP')} | untrained {_fmt(untrained.get('mAP'))}; empty "
        f"{_fmt(base['empty_detector']['mAP'])} |",
        f"| detection NDS-style | {_ci(d, 'NDS')} | |",
        f"| segmentation mIoU | {_ci(s, 'mIoU')} | untrained {_fmt(untrained.get('mIoU'))} |",
        f"| occupancy IoU near (<= 15 m) / whole grid | {_ci(o, 'iou_near_15m')} / {_ci(o, 'iou_grid')} | |",
        f"| minADE / minFDE top-1 | {_ci(p, 'minADE_1')} / {_ci(p, 'minFDE_1')} | CV minFDE_1 "
        f"{_ci(cv, 'minFDE_1')}; CA {_ci(ca, 'minFDE_1')} |",
        f"| minADE / minFDE top-K | {_ci(p, 'minADE_K')} / {_ci(p, 'minFDE_K')} | CV minFDE_K "
        f"{_ci(cv, 'minFDE_K')}; CA {_ci(ca, 'minFDE_K')} |",
        f"| moving agents minFDE top-1 / top-K | {_ci(p, 'moving_minFDE_1')} / {_ci(p, 'moving_minFDE_K')} | CV "
        f"{_ci(cv, 'moving_minFDE_K')}; CA {_ci(ca, 'moving_minFDE_K')} (top-K) |",
        f"| miss rate top-K, endpoint > 2 m (Argoverse) | {_ci(p, 'miss_rate_endpoint_K')} | |",
        f"| miss rate top-K, any point >= 2 m (nuScenes) | {_ci(p, 'miss_rate_anypoint_K')} | |",
        f"| end-to-end EPA / matched minFDE_K | {_ci(e, 'EPA')} / {_ci(e, 'minFDE_K_matched')} | |",
    ]


def write_report(out_dir: Path, results: dict[str, Any], breakdowns: dict[str, Any], pictures: list[str],
                 checkpoint: str) -> None:
    """A short markdown report: the headline table with intervals and baselines, breakdowns, pictures."""
    c = results["counts"]
    objects = ", ".join(f"{k} {v}" for k, v in c["distinct_objects"].items())
    lines = ["# Evaluation report", "",
             f"Checkpoint: `{checkpoint}`; split: test ({c['samples']} samples, {c['scenes']} scenes, {c['logs']} "
             f"held-out logs; distinct objects: {objects}; {c['agents']} agents, {c['agents_moving']} moving). "
             "Intervals: 95 % percentile bootstrap over scenes.", "", *_headline_rows(results), "",
             MODE_DEFINITIONS, "", "## Per class (AP)", "", "| class | AP | GT boxes |", "|---|---|---|"]
    lines += [f"| {k} | {_fmt(v['AP'])} | {v['num_gt']} |" for k, v in breakdowns["detection_per_class"].items()]
    lines += ["", "## Per distance band (mAP)", "", "| band | mAP | GT boxes |", "|---|---|---|"]
    lines += [f"| {k} | {_fmt(v['mAP'])} | {v['num_gt']} |"
              for k, v in breakdowns["detection_per_distance_band"].items()]
    for kind, groups in breakdowns["breakdown"].items():
        lines += ["", f"## By {kind.replace('_', ' ')}", "", "| name | mAP | mIoU | occ IoU | minADE | agents |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {n} | {_fmt(g['mAP'])} | {_fmt(g['mIoU'])} | {_fmt(g['occupancy_iou'])} | {_fmt(g['minADE'])} "
                  f"| {g['num_agents']} |" for n, g in groups.items()]
    lines += ["", "## Pictures", ""] + [f"![{Path(p).stem}]({p})" for p in pictures]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
