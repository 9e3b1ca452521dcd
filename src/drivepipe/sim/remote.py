"""Closed-loop scenarios as engine tasks (Ray): each worker process builds its own backend and agent once, runs
scenarios in isolation exactly as the harness does (`harness._run_one`, same seeds), and returns the scenario row,
the episode scores and the detail files' bytes; the driver writes every file, so workers need read access to the
dataset, cache and checkpoint (shared storage) but never write to the run's output folder.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivepipe.config import Config, config_hash
from drivepipe.engine import EngineError, EngineSpec, connect, ordered_map
from drivepipe.sim.interfaces import ClosedLoopScenario
from drivepipe.utils.io import atomic_write_bytes

_WORKER: dict[str, Any] = {}  # this worker's {"key": ..., "backend": ..., "agent": ...}


@dataclass(frozen=True)
class ScenarioTask:
    """One scenario and what a worker needs to build the backend and agent that run it."""

    cfg: Config
    checkpoint_dir: Path
    data_root: Path
    cache_dir: Path | None
    scenario: ClosedLoopScenario


def _worker_state(task: ScenarioTask) -> tuple[Any, Any]:
    """This process's backend and agent for the task's (config, checkpoint, data), built on first use."""
    key = (config_hash(task.cfg), str(task.checkpoint_dir), str(task.data_root), str(task.cache_dir))
    if _WORKER.get("key") != key:
        close_worker()
        from drivepipe.sim.agent import load_agent
        from drivepipe.sim.harness import make_backend

        _WORKER.update(key=key, backend=make_backend(task.cfg, task.data_root, task.cache_dir),
                       agent=load_agent(task.cfg, task.checkpoint_dir))
    return _WORKER["backend"], _WORKER["agent"]


def close_worker() -> None:
    """Close the backend and agent kept by `_worker_state` in this process."""
    for name in ("agent", "backend"):
        if _WORKER.get(name) is not None:
            _WORKER[name].close()
    _WORKER.clear()


def run_scenario_task(task: ScenarioTask) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, bytes]]:
    """Worker: one isolated scenario -> (scenarios.csv row, episode scores or None, {relative path: file bytes})."""
    from drivepipe.sim.harness import _run_one

    backend, agent = _worker_state(task)
    with tempfile.TemporaryDirectory(prefix="drivepipe-scenario-") as tmp:
        row, ep = _run_one(task.cfg, backend, agent, task.scenario, Path(tmp))
        files = {p.relative_to(tmp).as_posix(): p.read_bytes() for p in sorted(Path(tmp).rglob("*")) if p.is_file()}
    return row, ep, files


def remote_results(cfg: Config, checkpoint_dir: str | Path, data_root: str | Path, cache_dir: str | Path | None,
                   scenarios: list[ClosedLoopScenario], out_dir: Path, engine: EngineSpec
                   ) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
    """`harness._run_one` results in scenario order, run on `engine`; detail files written under out_dir here."""
    if cfg.carla_eval.backend != "embedded":
        raise EngineError(f"engine {engine.kind}: carla_eval.backend {cfg.carla_eval.backend!r} serves one scenario "
                          "at a time; run it with the local engine (only the embedded backend runs on Ray)")
    connect(engine)
    tasks = [ScenarioTask(cfg, Path(checkpoint_dir).resolve(), Path(data_root).resolve(),
                          None if cache_dir is None else Path(cache_dir).resolve(), sc) for sc in scenarios]
    for row, ep, files in ordered_map(run_scenario_task, tasks, engine):
        for rel, data in files.items():
            atomic_write_bytes(Path(out_dir) / rel, data)
        yield row, ep
