"""Closed-loop regression harness: pick scenarios, run each in isolation, score, write reports.

Outputs (fixed paths under out_dir, usually reports/carla_eval/): metrics.json (aggregate, the DVC metric) and,
under details/ (the DVC out): scenarios.csv (one row per scenario), steps/<scenario>.csv (step logs, sim/scorer.py
STEP_COLUMNS), replay/<scenario>.gif.

Isolation and budget: each scenario runs in try/except/finally; an exception becomes a row with status "failed",
its type and message, and the backend is closed (CARLA: sensors destroyed, settings restored) before the next.
After the run, a failed share above carla_eval.max_failure_rate raises `FailureBudgetExceeded` (reports are
written first). Seeds: scenario_seed(carla_eval.seed, scenario_id).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from drivepipe.config import Config, to_dict
from drivepipe.engine import EngineSpec
from drivepipe.errors import BackendUnavailable
from drivepipe.sim.interfaces import ClosedLoopAgent, ClosedLoopScenario, SimBackend
from drivepipe.sim.scorer import STEP_COLUMNS, aggregate, score_episode
from drivepipe.utils.io import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)
DETAILS = "details"  # out_dir/details/ holds everything but metrics.json (dvc.yaml: outs reports/carla_eval/details)
SCENARIO_COLUMNS = ("agent", "mode", "scenario", "scenario_type", "location", "status", "error_type", "error", "seed",
                    "steps", "route_length_m", "route_completion", "infraction_score", "driving_score",
                    "collisions_vehicle", "collisions_pedestrian", "collisions_static", "red_lights",
                    "off_road_share", "min_speed_factor", "terminated_by", "first_infraction", "first_infraction_t_s",
                    "comfortable", "nuplan_cls", "no_at_fault_collision", "drivable_area_compliance",
                    "driving_direction_compliance", "making_progress", "progress_ratio", "ttc_within_bound",
                    "speed_limit_compliance", "replay", "wall_s")


class FailureBudgetExceeded(RuntimeError):
    """More scenarios failed than carla_eval.max_failure_rate allows."""


def scenario_seed(global_seed: int, scenario_id: str) -> int:
    """A stable 31-bit seed from (carla_eval.seed, scenario id)."""
    return int.from_bytes(hashlib.sha256(f"{global_seed}:{scenario_id}".encode()).digest()[:4], "big") >> 1


def seed_scenario(seed: int) -> None:
    """Seed numpy's and (if loaded) torch's global generators before a scenario, so reruns are identical."""
    import sys

    np.random.seed(seed)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def safe_name(scenario_id: str) -> str:
    """A file name for a scenario id (`log/token` -> `log__token`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "__", scenario_id)


def run_episode(backend: SimBackend, agent: ClosedLoopAgent, scenario: ClosedLoopScenario,
                step_s: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Drive one scenario to its end -> (step rows, replay frames)."""
    bundle = backend.reset(scenario)
    agent.reset(scenario)
    rows: list[dict[str, Any]] = []
    frames: list[dict[str, Any]] = []
    max_steps = int(round(scenario.duration_s / step_s))
    for _ in range(max_steps):
        action = agent.act(bundle)
        result = backend.step(action)
        rows.append({k: result.info.get(k) for k in STEP_COLUMNS})
        frames.append({"row": rows[-1], "actors": result.info.get("_actors", np.zeros((0, 5))),
                       "agent": action.info})
        if result.done or result.bundle is None:
            break
        bundle = result.bundle
    return rows, frames


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    atomic_write_bytes(path, buf.getvalue().encode())


def _scenario_row(sc: ClosedLoopScenario, ep: dict[str, Any], steps: int, wall_s: float) -> dict[str, Any]:
    c = ep["collisions"]
    return {**{k: ep.get(k) for k in SCENARIO_COLUMNS if k in ep}, "scenario": sc.scenario_id, "status": "ok",
            "error_type": "", "error": "", "seed": sc.seed, "steps": steps, "collisions_vehicle": c["vehicle"],
            "collisions_pedestrian": c["pedestrian"], "collisions_static": c["static"],
            "comfortable": ep["comfort"]["comfortable"], "wall_s": round(wall_s, 2)}


def _run_one(cfg: Config, backend: SimBackend, agent: ClosedLoopAgent, sc: ClosedLoopScenario,
             out_dir: Path, tag: str = "") -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One isolated scenario -> (scenarios.csv row, episode scores or None when it failed). `tag` (agent and
    mode) prefixes the step-log and replay file names."""
    t0 = time.monotonic()
    name = tag + safe_name(sc.scenario_id)
    meta = {"scenario_type": sc.extra.get("scenario_type", ""), "location": sc.location,
            "replay": f"{DETAILS}/replay/{name}.gif" if cfg.carla_eval.animation else ""}
    for flag, attr in (("render_sensors", "needs_sensors"), ("privileged", "privileged")):
        if hasattr(backend, flag):
            setattr(backend, flag, getattr(agent, attr, flag == "render_sensors"))
    try:
        seed_scenario(sc.seed)
        rows, frames = run_episode(backend, agent, sc, cfg.carla_eval.step_s)
        _write_csv(out_dir / DETAILS / "steps" / f"{name}.csv", STEP_COLUMNS, rows)
        ep = score_episode(rows, cfg.carla_eval.step_s, sc.duration_s)
        if cfg.carla_eval.animation:
            from drivepipe.sim.replay import write_replay_gif

            outline = backend.map_outline(sc.route_xy) if hasattr(backend, "map_outline") else None
            write_replay_gif(out_dir / DETAILS / "replay" / f"{name}.gif", frames, sc.route_xy, outline)
        return {**_scenario_row(sc, ep, len(rows), time.monotonic() - t0), **meta}, ep
    except Exception as exc:  # noqa: BLE001 - isolation: any scenario error becomes a failed row
        log.warning("scenario %s failed: %s: %s", sc.scenario_id, type(exc).__name__, exc)
        row = {k: None for k in SCENARIO_COLUMNS}
        row.update(meta, scenario=sc.scenario_id, status="failed", error_type=type(exc).__name__,
                   error=str(exc)[:300], seed=sc.seed, wall_s=round(time.monotonic() - t0, 2))
        return row, None
    finally:
        backend.close()


def run_scenarios(cfg: Config, backend: SimBackend, agent: ClosedLoopAgent,
                  scenarios: list[ClosedLoopScenario], out_dir: str | Path) -> dict[str, Any]:
    """Run one agent over a list of scenarios here, score and report (see module docstring); returns the metrics
    dict. The carla_eval stage runs the model and the baselines through sim/suite.py instead."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = (_run_one(cfg, backend, agent, sc, out_dir) for sc in scenarios)
    rows, episodes = [], []
    for i, (sc, (row, ep)) in enumerate(zip(scenarios, results, strict=True)):
        rows.append(row)
        if ep is not None:
            episodes.append(ep)
        log.info("scenario %d/%d %s: %s, route completion %s, driving score %s (%s s)", i + 1, len(scenarios),
                 sc.scenario_id, row["status"], row["route_completion"], row["driving_score"], row["wall_s"])
    failed = sum(r["status"] == "failed" for r in rows)
    metrics = {**aggregate(episodes), "backend": backend.name, "status": "ok", "scenarios": len(rows),
               "completed": len(episodes), "failed": failed, "failed_rate": failed / max(1, len(rows)),
               "failures": {r["scenario"]: f"{r['error_type']}: {r['error']}" for r in rows if r["status"] == "failed"},
               "closed_loop_config": to_dict(cfg.carla_eval)}
    _write_csv(out_dir / DETAILS / "scenarios.csv", SCENARIO_COLUMNS, rows)
    atomic_write_json(out_dir / "metrics.json", metrics)
    if rows and metrics["failed_rate"] > cfg.carla_eval.max_failure_rate:
        raise FailureBudgetExceeded(f"{failed}/{len(rows)} closed-loop scenarios failed (max_failure_rate "
                                    f"{cfg.carla_eval.max_failure_rate}); see {out_dir / DETAILS / 'scenarios.csv'}")
    return metrics


def unavailable_metrics(cfg: Config, backend_name: str, reason: str, out_dir: str | Path) -> dict[str, Any]:
    """on_unavailable: record -> metrics.json with status backend_unavailable and no measured numbers (null)."""
    metrics = {**aggregate([]), "backend": backend_name, "status": "backend_unavailable", "reason": reason,
               "scenarios": 0, "completed": 0, "failed": 0, "failed_rate": None,
               "closed_loop_config": to_dict(cfg.carla_eval)}
    out_dir = Path(out_dir)
    _write_csv(out_dir / DETAILS / "scenarios.csv", SCENARIO_COLUMNS, [])
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics


def make_backend(cfg: Config, data_root: str | Path, cache_dir: str | Path | None = None) -> Any:
    """The backend chosen by carla_eval.backend (CARLA imported lazily inside its module)."""
    if cfg.carla_eval.backend == "carla":
        from drivepipe.sim.carla_backend import CarlaBackend

        return CarlaBackend(cfg)
    from drivepipe.sim.embedded import EmbeddedBackend

    return EmbeddedBackend(cfg, data_root, cache_dir=cache_dir)


def _scenarios_for(cfg: Config, backend: Any) -> list[ClosedLoopScenario]:
    seed_of = (lambda sid: scenario_seed(cfg.carla_eval.seed, sid))
    if cfg.carla_eval.backend == "carla":
        from drivepipe.sim.carla_backend import parse_routes_xml, routes_to_scenarios

        if not cfg.carla_eval.carla.routes_file:
            raise ValueError("carla_eval.carla.routes_file: a leaderboard routes XML is required for backend carla")
        routes = parse_routes_xml(cfg.carla_eval.carla.routes_file)
        return routes_to_scenarios(routes, cfg.carla_eval.duration_s, seed_of)[: cfg.carla_eval.num_scenarios]
    return backend.select_scenarios(cfg.carla_eval.num_scenarios, seed_of)


def run_closed_loop(cfg: Config, checkpoint_dir: str | Path, data_root: str | Path, out_dir: str | Path,
                    cache_dir: str | Path | None = "data/cache", engine: EngineSpec | None = None) -> dict[str, Any]:
    """The carla_eval stage: backend + model agent over val scenarios; returns the metrics written to
    out_dir/metrics.json. checkpoint_dir is one checkpoint directory (step_XXXXXX) or a link to one.
    `engine` kind ray runs the suite's jobs as Ray tasks (sim/remote.py); default: carla_eval.workers processes."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    backend = make_backend(cfg, data_root, cache_dir)
    try:
        try:
            if hasattr(backend, "probe"):
                backend.probe()
        except BackendUnavailable as exc:
            if cfg.carla_eval.on_unavailable == "fail":
                raise
            log.warning("backend %s unavailable, recording: %s", backend.name, exc)
            return unavailable_metrics(cfg, backend.name, str(exc), out_dir)
        scenarios = _scenarios_for(cfg, backend)
        selection = dict(getattr(backend, "selection", {}) or {})
    finally:
        getattr(backend, "shutdown", backend.close)()
    from drivepipe.sim.suite import run_suite

    return run_suite(cfg, scenarios, checkpoint_dir, data_root, cache_dir, out_dir, backend.name, selection, engine)


def run_for_checkpoint(cfg: Config, ckpt_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """The trainer's optional closed-loop trigger: one checkpoint, the data root from cfg.data.root."""
    return run_closed_loop(cfg, ckpt_dir, cfg.data.root, out_dir)
