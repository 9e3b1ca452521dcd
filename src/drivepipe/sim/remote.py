"""Closed-loop jobs on Ray: the suite's jobs (sim/suite.py `Job`, one agent x mode x scenario) run by
`drivepipe.engine.ordered_map` on a Ray cluster, in job order, so the merged results and files equal a local run.

A Ray worker never writes into the run's output folder (it may be on another node): it runs its job into a temp
folder and returns the scenarios.csv row, the episode scores and the detail files' bytes; the driver writes every
file. Workers need read access to the dataset, cache and checkpoint (shared storage). Only the embedded backend runs
here: a CARLA server serves one scenario at a time and is bound to a local worker (`carla_eval.carla.servers`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from drivepipe.engine import EngineError, EngineSpec, connect, ordered_map
from drivepipe.utils.io import atomic_write_bytes


def run_job_detached(job: Any) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, bytes]]:
    """Worker: `suite.run_job` into a temp folder -> (row, episode scores or None, {relative path: file bytes})."""
    from drivepipe.sim.suite import run_job

    with tempfile.TemporaryDirectory(prefix="drivepipe-job-") as tmp:
        row, ep = run_job(replace(job, out_dir=tmp))
        files = {p.relative_to(tmp).as_posix(): p.read_bytes() for p in sorted(Path(tmp).rglob("*")) if p.is_file()}
    return row, ep, files


def remote_jobs(jobs: Sequence[Any], out_dir: str | Path, engine: EngineSpec, backend_name: str
                ) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """`suite.run_job` results in job order, run on `engine`; each job's detail files written under out_dir here."""
    if backend_name != "embedded":
        raise EngineError(f"engine {engine.kind}: carla_eval.backend {backend_name!r} serves one scenario at a time "
                          "per server; run it with the local engine (only the embedded backend runs on Ray)")
    connect(engine)
    # absolute paths: a Ray worker's working directory is not the driver's
    jobs = [replace(j, checkpoint=_absolute(j.checkpoint), data_root=_absolute(j.data_root),
                    cache_dir=_absolute(j.cache_dir)) for j in jobs]
    results = []
    for row, ep, files in ordered_map(run_job_detached, jobs, engine):
        for rel, data in files.items():
            atomic_write_bytes(Path(out_dir) / rel, data)
        results.append((row, ep))
    return results


def _absolute(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else path
