"""Task functions the Ray tests send to workers (importable there: tests/ray is on the workers' PYTHONPATH)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def meet(task: tuple[int, str]) -> tuple[int, str, bool]:
    """Tasks 0 and 1 wait for each other (1 CPU each on 1-CPU nodes: they can only meet on different nodes)."""
    import ray

    i, folder = task
    Path(folder, str(i)).touch()
    other = Path(folder, str(1 - i))
    deadline = time.monotonic() + 60
    while not other.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return i, ray.get_runtime_context().get_node_id(), other.exists()


def crash_once(task: tuple[int, str]) -> int:
    """Kill the worker process the first time task 2 runs (a marker file remembers it)."""
    i, marker = task
    if i == 2 and not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)
    return i
