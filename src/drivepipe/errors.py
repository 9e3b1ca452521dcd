"""Errors that name the file (or params key) and what is wrong. Stage entry points print them in one line."""

from __future__ import annotations

from pathlib import Path


class DataError(Exception):
    """Bad input data: `source` is the file (or table/key) at fault, `problem` what is wrong with it."""

    def __init__(self, source: str | Path, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = str(source)
        self.problem = problem


class BackendUnavailable(RuntimeError):
    """A closed-loop backend (e.g. a CARLA server) could not be reached."""


class EngineError(RuntimeError):
    """The execution engine cannot run the work: Ray missing or unreachable, or a task's worker died too often."""
