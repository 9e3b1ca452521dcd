"""The carla_eval stage's suite: the model and every baseline, in every agent mode, on the same scenarios, run
as a pure per-job function mapped in order over worker processes, then aggregated with 95 % intervals.

A job = (agent kind, agent mode, scenario). `run_job` is pure given its job: it seeds from the scenario, builds
(once per process) the backend and the agent, and returns the scenarios.csv row and the episode scores; so
`ordered_map` may run jobs in any process and the merged results equal a sequential run. Embedded backend:
`carla_eval.workers` processes. CARLA: one process per `carla_eval.carla.servers` entry, each bound to its own
server, so a server runs one scenario at a time. The Ray engine (sim/remote.py) runs the same jobs through
`drivepipe.engine.ordered_map`, which keeps their order, so its metrics and files equal a local run's.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from drivepipe.config import Config, config_hash, to_dict
from drivepipe.engine import EngineSpec
from drivepipe.sim.interfaces import ClosedLoopScenario

log = logging.getLogger(__name__)
REPORTED = ("driving_score", "route_completion", "infraction_score", "nuplan_cls")
_PROCESS: dict[str, Any] = {}  # per-process backend and agents (worker state, built lazily)


@dataclass(frozen=True)
class Job:
    agent: str                 # "model" or a baseline name
    mode: str                  # "replay" | "idm"
    scenario: ClosedLoopScenario
    cfg: Config
    checkpoint: str
    data_root: str
    cache_dir: str | None
    out_dir: str


def _init_worker(servers: Any) -> None:
    """Bind this worker to one CARLA server (popped from a shared queue)."""
    if servers is not None:
        _PROCESS["server"] = servers.get()


def _bind(job: Job) -> None:
    """Drop this process's backend and agents when they were built for another run (a Ray worker outlives one)."""
    key = (config_hash(job.cfg), job.checkpoint, job.data_root, job.cache_dir)
    if _PROCESS.get("key") != key:
        server = _PROCESS.get("server")
        _close_process()
        _PROCESS.update(key=key, **({"server": server} if server else {}))


def _backend(job: Job) -> Any:
    from drivepipe.sim.harness import make_backend

    cfg = job.cfg
    server = _PROCESS.get("server")
    if server:
        host, _, port = server.rpartition(":")
        cfg = replace(cfg, carla_eval=replace(cfg.carla_eval, carla=replace(cfg.carla_eval.carla, host=host,
                                                                            port=int(port))))
    if "backend" not in _PROCESS:
        _PROCESS["backend"] = make_backend(cfg, job.data_root, job.cache_dir)
    return _PROCESS["backend"]


def _agent(job: Job) -> Any:
    from drivepipe.sim.baselines import make_agent

    agents = _PROCESS.setdefault("agents", {})
    if job.agent not in agents:
        agents[job.agent] = make_agent(job.agent, job.cfg, job.checkpoint)
    return agents[job.agent]


def run_job(job: Job) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One (agent, mode, scenario) -> (scenarios.csv row, episode scores or None when it failed)."""
    import sys

    from drivepipe.sim.harness import _run_one

    _bind(job)
    backend, agent = _backend(job), _agent(job)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)  # same float reductions in every process -> identical results
    if hasattr(backend, "agent_mode"):
        backend.agent_mode = job.mode
    cfg = job.cfg if job.agent == "model" else replace(job.cfg, carla_eval=replace(job.cfg.carla_eval,
                                                                                  animation=False))
    row, ep = _run_one(cfg, backend, agent, job.scenario, Path(job.out_dir), f"{job.agent}__{job.mode}__")
    row.update(agent=job.agent, mode=job.mode)
    return row, ep


def ordered_map(fn: Callable[[Job], Any], jobs: Sequence[Job], workers: int, servers: list[str] | None = None
                ) -> list[Any]:
    """fn over jobs, results in job order: in this process when workers == 1 (and no servers); with CARLA
    `servers`, one spawned worker per server, bound to it; else `drivepipe.engine.ordered_map` over `workers`
    spawned processes (never fork: a forked child of a process that ran torch can hang in its thread pool)."""
    if servers:
        ctx = mp.get_context("spawn")
        queue = ctx.Manager().Queue()
        for s in servers:
            queue.put(s)
        with ctx.Pool(len(servers), initializer=_init_worker, initargs=(queue,)) as pool:
            return list(pool.imap(fn, jobs, chunksize=1))
    if workers <= 1 or len(jobs) <= 1:
        _PROCESS.clear()
        try:
            return [fn(j) for j in jobs]
        finally:
            _close_process()
    from drivepipe.engine import ordered_map as engine_map

    return list(engine_map(fn, jobs, EngineSpec(), workers=workers))


def _close_process() -> None:
    for a in _PROCESS.get("agents", {}).values():
        a.close()
    if "backend" in _PROCESS:
        b = _PROCESS["backend"]
        getattr(b, "shutdown", b.close)()
    _PROCESS.clear()


def _summary(episodes: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate (sim/scorer.aggregate) plus a 95 % interval over scenarios of each REPORTED score and each
    scenario's first infraction (time, type, replay link when there is a replay)."""
    from drivepipe.sim.scorer import aggregate
    from drivepipe.stats import mean_ci

    out = aggregate(episodes)
    out["ci95"] = {}
    for key in REPORTED:
        vals = [e[key] for e in episodes if e.get(key) is not None]
        out["ci95"][key] = list(mean_ci([[v] for v in vals])) if len(vals) >= 2 else None
    out["first_infractions"] = {r["scenario"]: {"t_s": e["first_infraction_t_s"], "type": e["first_infraction"],
                                                "replay": r.get("replay") or None}
                                for r, e in zip(rows, episodes) if e["first_infraction"]}
    out["scenarios"] = len(episodes)
    return out


def run_suite(cfg: Config, scenarios: list[ClosedLoopScenario], checkpoint: str | Path, data_root: str | Path,
              cache_dir: str | Path | None, out_dir: str | Path, backend_name: str,
              selection: dict[str, Any] | None = None, engine: EngineSpec | None = None) -> dict[str, Any]:
    """Every agent (model first, then carla_eval.baselines) x mode x scenario; writes metrics.json and
    details/scenarios.csv (harness layout) and returns the metrics. The top-level scores are the model's in the
    first mode (carla_eval.agents[0]); `agents.<agent>.<mode>` holds every agent's, with `ci95` intervals.
    `engine` kind ray runs the jobs on a Ray cluster (sim/remote.py); otherwise `carla_eval.workers` processes."""
    from drivepipe.sim.harness import DETAILS, SCENARIO_COLUMNS, FailureBudgetExceeded, _write_csv
    from drivepipe.utils.io import atomic_write_json

    ce = cfg.carla_eval
    no_log = ("expert",) if backend_name == "carla" else ()  # log replay: a CARLA route has no logged drive
    kinds = ["model", *[b for b in ce.baselines if b not in no_log]]
    jobs = [Job(k, m, sc, cfg, str(checkpoint), str(data_root), None if cache_dir is None else str(cache_dir),
                str(out_dir)) for m in ce.agents for k in kinds for sc in scenarios]
    if engine is not None and engine.kind != "local":
        from drivepipe.sim.remote import remote_jobs

        results = remote_jobs(jobs, out_dir, engine, backend_name)
    else:
        results = ordered_map(run_job, jobs, ce.workers, ce.carla.servers if backend_name == "carla" else None)
    rows = [r for r, _ in results]
    agents: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        for mode in ce.agents:
            sel = [(row, ep) for j, (row, ep) in zip(jobs, results)
                   if j.agent == kind and j.mode == mode and ep is not None]
            agents.setdefault(kind, {})[mode] = _summary([e for _, e in sel], [r for r, _ in sel])
    failed = sum(r["status"] == "failed" for r in rows)
    head = agents["model"][ce.agents[0]]
    metrics = {**{k: v for k, v in head.items() if k not in ("first_infractions", "scenarios")},
               "backend": backend_name, "status": "ok", "scenarios": len(scenarios), "jobs": len(rows),
               "completed": len(rows) - failed, "failed": failed, "failed_rate": failed / max(1, len(rows)),
               "failures": {f"{r['agent']}/{r['mode']}/{r['scenario']}": f"{r['error_type']}: {r['error']}"
                            for r in rows if r["status"] == "failed"},
               "scenario_types": {t: sum(sc.extra.get("scenario_type") == t for sc in scenarios)
                                  for t in sorted({sc.extra.get("scenario_type", "") for sc in scenarios})},
               **(selection or {}), "agents": agents, "closed_loop_config": to_dict(ce)}
    out = Path(out_dir)
    _write_csv(out / DETAILS / "scenarios.csv", SCENARIO_COLUMNS, rows)
    atomic_write_json(out / "metrics.json", _jsonable(metrics))
    if rows and metrics["failed_rate"] > ce.max_failure_rate:
        raise FailureBudgetExceeded(f"{failed}/{len(rows)} closed-loop jobs failed (max_failure_rate "
                                    f"{ce.max_failure_rate}); see {out / DETAILS / 'scenarios.csv'}")
    return metrics


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x
