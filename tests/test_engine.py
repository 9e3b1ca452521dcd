"""The engine seam without Ray: task order, bounded in-flight work, worker crashes, engine selection, clear errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import pytest

from drivepipe import engine as eng
from drivepipe.engine import EngineError, EngineSpec, engine_from_env, ordered_map

SRC = Path(__file__).resolve().parents[1] / "src"


def _square_late_first(task: tuple[int, int]) -> int:
    """Early tasks finish last, so completion order is the reverse of task order."""
    i, n = task
    time.sleep(0.03 * (n - i))
    return i * i


def _crash_once(task: tuple[int, str]) -> int:
    """Kill this worker process the first time task 2 runs (a marker file remembers it); else return the task."""
    i, marker = task
    if i == 2 and not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)
    return i


def _always_crash(task: int) -> int:
    os._exit(1)


@pytest.mark.slow  # spawns processes
def test_local_pool_yields_in_task_order() -> None:
    tasks = [(i, 6) for i in range(6)]
    assert list(ordered_map(_square_late_first, tasks, EngineSpec(), workers=2)) == [i * i for i in range(6)]


def test_serial_when_one_worker_runs_here() -> None:
    seen = []
    assert list(ordered_map(lambda t: seen.append(os.getpid()) or t, [1, 2, 3], workers=1)) == [1, 2, 3]
    assert set(seen) == {os.getpid()}  # a lambda would not pickle: proof it ran in this process


class _FakePool:
    """Runs a call when its result is asked for; records how many calls were submitted and not yet consumed."""

    name = "fake"

    def __init__(self) -> None:
        self.outstanding = 0
        self.peak = 0

    def submit(self, fn, batch, initializer):
        self.outstanding += 1
        self.peak = max(self.peak, self.outstanding)
        return (fn, batch)

    def result(self, handle):
        self.outstanding -= 1
        fn, batch = handle
        return [fn(t) for t in batch]


def test_in_flight_work_is_bounded() -> None:
    pool = _FakePool()
    batches = [[i] for i in range(50)]
    out = []
    for res in eng._bounded(pool, lambda t: t, batches, limit=3, initializer=None, retries=0):
        assert pool.outstanding <= 3
        out.extend(res)
    assert out == list(range(50)) and pool.peak == 3


@pytest.mark.slow  # spawns processes
def test_local_worker_crash_is_retried(tmp_path: Path) -> None:
    marker = str(tmp_path / "crashed")
    tasks = [(i, marker) for i in range(5)]
    assert list(ordered_map(_crash_once, tasks, EngineSpec(retries=1), workers=2)) == list(range(5))
    assert os.path.exists(marker)  # the crash did happen


@pytest.mark.slow  # spawns processes
def test_submit_after_a_worker_died_fails_that_call_not_the_map() -> None:
    # The race CI hit: a worker dies, then the map refills before consuming the dead call, and
    # ProcessPoolExecutor.submit raises BrokenProcessPool. That call must fail like the dead one (so the retry
    # rebuilds the pool) instead of ending the whole map.
    pool = eng._LocalPool(1, retries=1)
    try:
        dead = pool.submit(_always_crash, [0], None)
        with pytest.raises(eng._WorkerDied):
            pool.result(dead)
        late = pool.submit(_crash_once, [(1, "unused")], None)
        with pytest.raises(eng._WorkerDied):
            pool.result(late)
        pending = pool.resubmit(deque([(1, late, 0)]))
        assert pool.result(pending[0][1]) == [1]
    finally:
        pool.close()


@pytest.mark.slow  # spawns processes
def test_local_worker_crash_beyond_retries_names_the_task() -> None:
    with pytest.raises(EngineError, match="died 2 times"):
        list(ordered_map(_always_crash, [0, 1], EngineSpec(retries=1), workers=2))


def test_engine_selection_flag_then_env_then_local() -> None:
    assert engine_from_env(env={}) == EngineSpec("local", None)
    env = {"DRIVEPIPE_ENGINE": "Ray", "RAY_ADDRESS": "head:6379"}
    assert engine_from_env(env=env) == EngineSpec("ray", "head:6379")
    assert engine_from_env("local", env=env).kind == "local"
    assert engine_from_env(None, "other:1", env=env).address == "other:1"
    with pytest.raises(EngineError, match="DRIVEPIPE_ENGINE"):
        engine_from_env(env={"DRIVEPIPE_ENGINE": "spark"})


def test_missing_ray_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(EngineError, match=r"pip install -e '\.\[ray\]'"):
        eng.connect_ray(None)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_cluster_fails_fast_with_one_line() -> None:
    with pytest.raises(EngineError, match="cannot reach the Ray cluster"):
        eng._probe(f"127.0.0.1:{_closed_port()}", timeout_s=2.0)
    with pytest.raises(EngineError, match="expected auto, host:port"):
        eng._probe("head-without-port")


@pytest.mark.slow  # spawns processes
def test_cli_unreachable_cluster_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC), "DRIVEPIPE_ENGINE": "ray", "RAY_ADDRESS": f"127.0.0.1:{_closed_port()}"}
    proc = subprocess.run([sys.executable, "-m", "drivepipe.cli.preprocess", "--data", str(tmp_path),
                           "--out", str(tmp_path / "cache")], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drivepipe: engine ray: "), proc.stderr
    assert not (tmp_path / "cache").exists()
