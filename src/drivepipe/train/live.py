"""Training logger: a thin dvclive wrapper (rank 0 only) plus `summary.json`, the stage's DVC metric.

Layout (as declared in dvc.yaml): `reports/train/live/` is the dvclive dir (persisted output, plots under
`live/plots/metrics`), `reports/train/summary.json` the final metrics. `Live(<reports>/live, dvcyaml=False,
save_dvc_exp=False, resume=...)`: the metrics and plots are declared in dvc.yaml by hand. The dvclive step is
the optimizer step; on resume, rows logged after the checkpoint's step are dropped so the history matches an
uninterrupted run.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

from drivepipe.utils.io import atomic_write_json

log = logging.getLogger(__name__)


def _truncate_history(reports_dir: Path, max_step: int) -> None:
    """Remove dvclive TSV rows with step > max_step (logged by a run that was killed after its last save)."""
    for tsv in (reports_dir / "plots" / "metrics").rglob("*.tsv"):
        with open(tsv, newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        if not rows or "step" not in rows[0]:
            continue
        col = rows[0].index("step")
        kept = [rows[0]] + [r for r in rows[1:] if int(r[col]) <= max_step]
        with open(tsv, "w", newline="") as f:
            csv.writer(f, delimiter="\t", lineterminator="\n").writerows(kept)


def _make_live(reports_dir: Path, resume: bool) -> Any:
    """`Live(reports_dir, dvcyaml=False, save_dvc_exp=False, resume=resume)`, or None when dvclive cannot start.

    dvclive's test mode (DVCLIVE_TEST=true) ignores `dir` (it writes into a temporary directory that is deleted)
    and crashes with dvcyaml=False in dvclive 3.49, so it is switched off while the logger is created. In a Git
    repo without commits Live() raises SCMError; training then goes on without step plots (summary.json is still
    written).
    """
    from dvclive import Live

    test_mode = os.environ.pop("DVCLIVE_TEST", None)
    try:
        return Live(str(reports_dir), dvcyaml=False, save_dvc_exp=False, resume=resume)
    except Exception as exc:  # noqa: BLE001 - scmrepo's SCMError and friends; logging must not stop training
        log.warning("dvclive disabled (%s: %s); only %s/summary.json is written", type(exc).__name__, exc,
                    reports_dir)
        return None
    finally:
        if test_mode is not None:
            os.environ["DVCLIVE_TEST"] = test_mode


def leaf_names(metrics: dict[str, float]) -> dict[str, float]:
    """dvclive nests metrics by "/" in its summary, so a name that is also a parent ("loss/det" next to
    "loss/det/focal") is logged as "<name>/total"."""
    parents = {k.rsplit("/", i)[0] for k in metrics for i in range(1, k.count("/") + 1)}
    return {(f"{k}/total" if k in parents else k): v for k, v in metrics.items()}


class TrainLogger:
    """`maybe_log(step, metrics)` every train.log_every_steps optimizer steps, `log_epoch(step, metrics)` for val/*,
    `write_summary(metrics)` at the end. All methods are no-ops when `enabled` is False (ranks > 0)."""

    def __init__(self, reports_dir: str | Path, every: int, *, resume_step: int | None, enabled: bool = True) -> None:
        self.reports_dir = Path(reports_dir)
        self.dir = self.reports_dir / "live"
        self.every = every
        self.enabled = enabled
        self.live: Any = None
        if not enabled:
            return
        if resume_step is None:
            shutil.rmtree(self.dir, ignore_errors=True)  # a fresh start resets the history
            (self.reports_dir / "summary.json").unlink(missing_ok=True)
        else:
            _truncate_history(self.dir, resume_step)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.live = _make_live(self.dir, resume=resume_step is not None)

    def _log(self, step: int, metrics: dict[str, float]) -> None:
        if self.live is None:
            return
        self.live.step = step
        for name, value in sorted(leaf_names(metrics).items()):
            self.live.log_metric(name, float(value))
        self.live.make_summary()

    def maybe_log(self, step: int, metrics: dict[str, float]) -> bool:
        """Log step metrics when `step` is a multiple of `every`; returns whether it logged."""
        if not self.enabled or step % self.every != 0:
            return False
        self._log(step, metrics)
        return True

    def log_epoch(self, step: int, metrics: dict[str, float]) -> None:
        if self.enabled:
            self._log(step, metrics)

    def write_summary(self, metrics: dict[str, Any]) -> None:
        """`<reports_dir>/summary.json`: final metrics (NaN/inf written as strings)."""
        if not self.enabled:
            return
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v)) for k, v in metrics.items()}
        self.reports_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.reports_dir / "summary.json", clean)

    def close(self) -> None:
        if self.live is not None:
            self.live.end()
            self.live = None
