"""Errors that name the file (or params key) and what is wrong. Stage entry points print them in one line.

Exit codes of every `drivepipe` command (`cli/_common.guarded`; README "Troubleshooting" lists the messages):
    0  success
    1  an unexpected error (a bug: the traceback is printed)
    2  bad params, bad input data or a closed-loop backend that cannot be reached (fix the named file or key)
    3  a checkpoint is missing, incomplete or corrupted (the message names the file and the step to use)
    4  training diverged or a model holds non-finite weights or predictions (nothing non-finite is saved)
    5  no space left on the device being written (the message names the path and about how much is needed)
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

EXIT_OK, EXIT_BUG, EXIT_INPUT, EXIT_CHECKPOINT, EXIT_NONFINITE, EXIT_DISK_FULL = 0, 1, 2, 3, 4, 5


class DataError(Exception):
    """Bad input data: `source` is the file (or table/key) at fault, `problem` what is wrong with it."""

    def __init__(self, source: str | Path, problem: str = "") -> None:
        # one argument: re-raised by a DataLoader worker (torch rebuilds the error from its formatted traceback)
        super().__init__(f"{source}: {problem}" if problem else str(source))
        self.source = str(source)
        self.problem = problem


class BackendUnavailable(RuntimeError):
    """A closed-loop backend (e.g. a CARLA server) could not be reached."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or corrupted; the message names the file."""


class NonFiniteError(RuntimeError):
    """Training diverged, or weights / predictions hold NaN or infinity; the message says where."""


class DiskFullError(OSError):
    """Writing `path` failed because its file system is full."""

    def __init__(self, path: str | Path, need_bytes: int | None = None) -> None:
        need = f", need ~{max(1, -(-need_bytes // 2**20))} MB" if need_bytes else ""
        free = _free_mb(path)
        super().__init__(errno.ENOSPC, f"no space left on {path}{need} ({free} MB free); free some space and rerun")
        self.path = str(path)


def one_line(exc: BaseException) -> str:
    """The message of `exc` as one line; for an error re-raised from a DataLoader worker (whose message is the
    worker's whole traceback) only the original error's own message."""
    text = str(exc)
    if "Traceback (most recent call last)" in text:
        last = text.rstrip().splitlines()[-1]
        text = last.split("Error: ", 1)[1] if "Error: " in last else last
    return " ".join(text.split())


def _free_mb(path: str | Path) -> int:
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free // 2**20


def is_disk_full(exc: BaseException, path: str | Path) -> bool:
    """True when `exc` is ENOSPC, or an I/O error (LMDB reports a full disk as EIO) while `path`'s file system
    has less than 1 MiB free."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    text = str(exc)
    if "No space left" in text:
        return True
    return ("Input/output error" in text or "unexpected pos" in text) and _free_mb(path) < 1


class EngineError(RuntimeError):
    """The execution engine cannot run the work: Ray missing or unreachable, or a task's worker died too often."""
