"""Execution engines: one ordered map over tasks, on a local process pool (the default) or on a Ray cluster.

`ordered_map(fn, tasks, engine, workers)` yields `fn(task)` for every task **in task order**, whatever order the
workers finish in, so a single writer on the driver produces the same bytes on every engine. At most
`engine.max_in_flight` calls (default 2 per worker / per cluster CPU) are submitted and not yet consumed, so the
driver's memory and Ray's object store stay flat with the data size. `fn` should return per-task failures as data
(the stages' skip/fail policies do); an exception it raises ends the map. A worker process that dies (OOM killer,
segfault) is retried `engine.retries` times, then `EngineError` names the task.

The engine is chosen outside params.yaml (CLI `--engine` / env `DRIVEPIPE_ENGINE`, `--ray-address` / env
`RAY_ADDRESS`): it changes where work runs, never what it computes, so switching engines reruns nothing in DVC.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivepipe.errors import EngineError

ENGINES = ("local", "ray")
PROBE_TIMEOUT_S = 5.0  # s, TCP connect to a Ray address before ray.init
__all__ = ["ENGINES", "EngineError", "EngineSpec", "connect", "connect_ray", "engine_from_env", "ordered_map"]
_INITIALIZED: set[Callable[[], None]] = set()  # initializers already run in this worker process


@dataclass(frozen=True)
class EngineSpec:
    """Where tasks run. Not part of the config tree on purpose: it must not change any DVC hash."""

    kind: str = "local"  # "local" (process pool of `workers`) | "ray"
    address: str | None = None  # ray: None = start Ray on this machine; "auto", "host:6379" or "ray://host:10001"
    max_in_flight: int = 0  # submitted and not yet consumed calls; 0 = 2 per worker / cluster CPU
    retries: int = 2  # resubmissions of a call whose worker process died

    def __post_init__(self) -> None:
        if self.kind not in ENGINES:
            raise EngineError(f"engine {self.kind!r}: expected one of {', '.join(ENGINES)} (DRIVEPIPE_ENGINE/--engine)")
        if self.max_in_flight < 0 or self.retries < 0:
            raise EngineError("engine: max_in_flight and retries must be >= 0")


def engine_from_env(kind: str | None = None, address: str | None = None,
                    env: dict[str, str] | None = None) -> EngineSpec:
    """CLI flags first, then DRIVEPIPE_ENGINE / RAY_ADDRESS, then the local pool."""
    env = os.environ if env is None else env
    kind = kind or env.get("DRIVEPIPE_ENGINE") or "local"
    return EngineSpec(kind=kind.strip().lower(), address=address or env.get("RAY_ADDRESS") or None)


def connect(engine: EngineSpec | None) -> None:
    """Fail early (before planning work) when the engine cannot run: ray missing or its cluster unreachable."""
    if engine is not None and engine.kind == "ray":
        connect_ray(engine.address)


def ordered_map(fn: Callable[[Any], Any], tasks: Iterable[Any], engine: EngineSpec | None = None, workers: int = 1,
                initializer: Callable[[], None] | None = None, group: int = 1) -> Iterator[Any]:
    """`fn(task)` for each task, in task order (see the module docstring).

    `workers` sizes the local pool (<= 1: in this process, no initializer); `group` > 1 hands up to that many
    consecutive tasks to one worker call when there are enough tasks to keep every worker busy (consecutive tasks
    that share state, e.g. chunks of one log, then load it once). `fn`, the tasks and the results must pickle.
    """
    engine = engine or EngineSpec()
    tasks = list(tasks)
    if engine.kind == "local" and (workers <= 1 or len(tasks) <= 1):
        yield from map(fn, tasks)
        return
    pool = _RayPool(engine) if engine.kind == "ray" else _LocalPool(min(workers, len(tasks)), engine.retries)
    size = max(1, min(group, len(tasks) // (2 * pool.parallelism)))
    batches = [tasks[i:i + size] for i in range(0, len(tasks), size)]
    limit = engine.max_in_flight or 2 * pool.parallelism
    try:
        for out in _bounded(pool, fn, batches, limit, initializer, pool.extra_retries):
            yield from out
    finally:
        pool.close()


def _run_batch(fn: Callable[[Any], Any], batch: list[Any], initializer: Callable[[], None] | None) -> list[Any]:
    """Worker side: run the process initializer once, then `fn` over one batch."""
    if initializer is not None and initializer not in _INITIALIZED:
        initializer()
        _INITIALIZED.add(initializer)
    return [fn(task) for task in batch]


def _bounded(pool: Any, fn: Callable[[Any], Any], batches: list[list[Any]], limit: int,
             initializer: Callable[[], None] | None, retries: int) -> Iterator[list[Any]]:
    """Submit up to `limit` batches ahead; consume the oldest; refill before handing its result out."""
    pending: deque = deque()
    nxt = 0
    while nxt < len(batches) or pending:
        while nxt < len(batches) and len(pending) < limit:
            pending.append((nxt, pool.submit(fn, batches[nxt], initializer), 0))
            nxt += 1
        index, handle, attempt = pending.popleft()
        while True:
            try:
                out = pool.result(handle)
                break
            except _WorkerDied as exc:
                if attempt >= retries:
                    raise EngineError(f"{pool.name}: the worker of task {index} died {attempt + 1} times "
                                      f"({exc}); giving up") from exc
                attempt += 1
                pending = pool.resubmit(pending)
                handle = pool.submit(fn, batches[index], initializer)
        yield out


class _WorkerDied(Exception):
    """A worker process ended while running a call (the call itself did not raise)."""


class _LocalPool:
    """concurrent.futures over spawned processes (no inherited LMDB/OpenMP state); a dead worker breaks the whole
    pool, so it is rebuilt and every pending call resubmitted."""

    name = "local pool"

    def __init__(self, workers: int, retries: int) -> None:
        self.parallelism = max(1, workers)
        self.extra_retries = retries  # rebuilds of the pool after a worker died
        self._executor = self._start()

    def _start(self) -> Any:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(self.parallelism, mp_context=mp.get_context("spawn"))

    def submit(self, *args: Any) -> Any:
        from concurrent.futures import Future
        from concurrent.futures.process import BrokenProcessPool

        try:
            return (self._executor.submit(_run_batch, *args), args)
        except BrokenProcessPool as exc:  # a worker died since the last result: fail this call like the others
            broken: Future = Future()
            broken.set_exception(exc)
            return (broken, args)

    def result(self, handle: Any) -> Any:
        from concurrent.futures.process import BrokenProcessPool

        try:
            return handle[0].result()
        except BrokenProcessPool as exc:
            raise _WorkerDied(str(exc) or "process pool broken") from exc

    def resubmit(self, pending: deque) -> deque:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = self._start()
        return deque((i, self.submit(*args), a) for i, (_, args), a in pending)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class _RayPool:
    """Ray tasks (1 CPU each). Ray itself retries a call whose worker died (`max_retries`), so `resubmit` is only
    reached once those are spent."""

    name = "ray"

    def __init__(self, engine: EngineSpec) -> None:
        self._ray = connect_ray(engine.address)
        self.parallelism = max(1, int(self._ray.cluster_resources().get("CPU", 1)))
        self.extra_retries = 0  # Ray already retried max_retries times before ray.get raises
        self._remote = self._ray.remote(num_cpus=1, max_retries=engine.retries)(_run_batch)
        self._refs: set[Any] = set()  # submitted, not yet consumed

    def submit(self, *args: Any) -> Any:
        ref = self._remote.remote(*args)
        self._refs.add(ref)
        return ref

    def result(self, handle: Any) -> Any:
        from ray import exceptions as rx

        try:
            return self._ray.get(handle)
        except (rx.WorkerCrashedError, rx.NodeDiedError, rx.OutOfMemoryError) as exc:
            raise _WorkerDied(type(exc).__name__) from exc
        finally:
            self._refs.discard(handle)  # finished, one way or the other

    def resubmit(self, pending: deque) -> deque:
        return pending  # other calls are independent Ray tasks with their own retries

    def close(self) -> None:
        """Cancel what an abandoned map left running (never a consumed call: cancelling a task that Ray has
        retried after a worker crash trips an internal check in ray 2.60 and kills the driver)."""
        for ref in self._refs:
            try:
                self._ray.cancel(ref)
            except Exception:  # noqa: BLE001 - finished or already gone
                pass
        self._refs.clear()


def connect_ray(address: str | None) -> Any:
    """`ray.init` once per process (reused if already connected): a clear EngineError when Ray is not installed or
    the cluster does not answer. Without an address, a local Ray is started whose workers import this drivepipe."""
    try:
        import ray
    except ImportError as exc:
        raise EngineError("engine ray: the ray package is not installed (pip install -e '.[ray]')") from exc
    if ray.is_initialized():
        return ray
    kwargs: dict[str, Any] = {"address": address or "local", "log_to_driver": False}
    if not address:
        src = str(Path(__file__).resolve().parents[1])  # the folder holding this drivepipe package
        path = os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])])
        kwargs.update(include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    if address and address != "auto":
        _probe(address)
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EngineError(f"engine ray: cannot reach the Ray cluster at {address or 'a new local instance'}: "
                          f"{first[:200]}") from exc
    return ray


def _probe(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """A TCP connect to the cluster's host:port first: `ray.init` on a dead address retries for minutes."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise EngineError(f"engine ray: RAY_ADDRESS/--ray-address {address!r}: expected auto, host:port or "
                          "ray://host:port")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise EngineError(f"engine ray: cannot reach the Ray cluster at {address}: {exc.strerror or exc} "
                          f"(is `ray start --head` running there, and the port open?)") from None
