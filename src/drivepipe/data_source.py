"""The `download` stage's library function: put a nuPlan-format dataset at `out_root`, atomically.

`data.source: synthetic` generates the embedded synthetic world; `data.source: nuplan` brings the user's real
nuPlan-mini (links, archives or folders). Either way the result is written to `<out_root>.tmp/` and renamed into
place only when complete, with `manifest.json` (files, sizes, sha256) and a verification report.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from drivepipe.config import Config
from drivepipe.errors import DataError
from drivepipe.nuplan.download import fetch_nuplan, write_manifest
from drivepipe.utils.io import atomic_write_json

log = logging.getLogger(__name__)


def run_download(cfg: Config, out_root: Path, report_path: Path) -> dict:
    """Build the dataset into a temporary folder, verify it, then swap it into `out_root`."""
    t0 = time.perf_counter()
    tmp = out_root.with_name(out_root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # leftovers of a killed run
    tmp.mkdir(parents=True)
    if cfg.data.source == "synthetic":
        from drivepipe.world.generate import generate_dataset

        summary = generate_dataset(cfg.data, tmp)
    else:
        summary = fetch_nuplan(cfg.data.nuplan, tmp)
    manifest = write_manifest(tmp)
    from drivepipe.nuplan.verify import verify_dataset

    verification = verify_dataset(tmp)
    problems = verification.get("problems", [])
    if problems and (cfg.data.source == "synthetic" or cfg.data.missing_blob_policy == "fail"):
        first = problems[0]
        raise DataError(first["file"], f"{first['problem']} (and {len(problems) - 1} more problems; "
                                       f"dataset left in {tmp} for inspection)")
    if out_root.exists():
        shutil.rmtree(out_root)
    tmp.rename(out_root)
    report = {"source": cfg.data.source, "generation": summary, "dataset_hash": manifest["dataset_hash"],
              "num_files": manifest["num_files"], "total_bytes": manifest["total_bytes"],
              "verification": verification, "seconds": round(time.perf_counter() - t0, 2)}
    atomic_write_json(report_path, report)
    log.info("dataset ready at %s: %d files, %d problems", out_root, manifest["num_files"], len(problems))
    return report
