"""End-to-end `dvc repro` in a throwaway git repo, stage by stage, then a no-op repro.

Figure: seconds per stage (`dvc repro -s <stage>` in pipeline order, each timed; DVC's own overhead included), the
total, and the time of a `dvc repro` right after (everything up to date: no-op) plus `dvc status`. The repo is a temp
copy of src/, dvc.yaml, params.yaml, .dvc/config (git init + one commit), run with PYTHONPATH=<tmp>/src and the venv's
bin first on PATH. Targets: total <= 600 s, no-op <= 3 s. Floor: `dvc --version` (process start-up) in the same run.
A stage that fails or passes --stage-timeout stops the run; later stages are reported "not run"; for an unfinished
stage the last progress bar gives done/total steps and a projected stage time. `--train-epochs N` runs the default
params with train.epochs = N (the full-size data, a shorter train stage) into `repro_train_epochs<N>.json`.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _common import REPO, WORK, log, parse_args, ratio, write_result

STAGES = ("download", "preprocess", "train", "evaluate", "carla_eval")
TARGET_TOTAL_S, TARGET_NOOP_S = 600.0, 3.0
# one log of 7 short scenes: nuPlan's rules drop 2 + 2 scenes per log, the 3 left give both a train and a val split
QUICK_PARAMS = {"data": {"synthetic": {"num_logs": 3, "scenes_per_log": 7, "scene_duration_s": 2.0}},
                "train": {"epochs": 1, "max_steps": 3, "save_every_epochs": 1},
                "carla_eval": {"num_scenarios": 1, "duration_s": 2.0, "animation": False}}


def make_repo(params_override: dict) -> Path:
    """Temp git repo holding the pipeline: src/, dvc.yaml, params.yaml, .dvc/config, one commit."""
    from _common import _merge

    tmp = Path(tempfile.mkdtemp(dir=WORK, prefix="repro_"))
    shutil.copytree(REPO / "src", tmp / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy2(REPO / name, tmp / name)
    (tmp / ".dvc").mkdir()
    shutil.copy2(REPO / ".dvc" / "config", tmp / ".dvc" / "config")
    (tmp / ".dvc" / ".gitignore").write_text("/config.local\n/tmp\n/cache\n")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in params_override.items():
        _merge(params.setdefault(section, {}), values)
    (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, default_flow_style=False))
    for d in ("data", "checkpoints", "reports"):
        (tmp / d).mkdir(exist_ok=True)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "bench"]):
        subprocess.run(git + cmd, cwd=tmp, check=True, capture_output=True)
    return tmp


def env_for(repo: Path) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    return {**os.environ, "PYTHONPATH": str(repo / "src"), "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
            "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1"}


def timed(cmd: list[str], repo: Path, timeout: float) -> dict:
    tic = time.perf_counter()
    try:
        out = subprocess.run(cmd, cwd=repo, env=env_for(repo), capture_output=True, text=True, timeout=timeout,
                             check=False)
        rc, text = out.returncode, out.stdout + out.stderr
    except subprocess.TimeoutExpired as exc:
        rc, text = "timeout", (exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(errors="replace")
    return {"seconds": round(time.perf_counter() - tic, 2), "rc": rc, "tail": text.strip().splitlines()[-6:]}


def _seconds(hms: str) -> int:
    parts = [int(x) for x in hms.split(":")]
    return sum(v * 60 ** i for i, v in enumerate(reversed(parts)))


def progress_projection(tail: list[str]) -> dict | None:
    """From the last tqdm line of an unfinished stage: done/total and elapsed + remaining = projected stage seconds."""
    for line in reversed(tail):
        found = re.findall(r"(\d+)/(\d+) \[([\d:]+)<([\d:?]+)", line)
        if found:
            done, total, elapsed, left = found[-1]
            if "?" in left:
                return None
            return {"done": int(done), "total": int(total),
                    "projected_s": _seconds(elapsed) + _seconds(left)}
    return None


def main() -> None:
    args = parse_args(__doc__, lambda p: (p.add_argument("--stage-timeout", type=float, default=1500.0),
                                          p.add_argument("--keep", action="store_true"),
                                          p.add_argument("--train-epochs", type=int, default=0,
                                                         help="override train.epochs (result: repro_train_epochs<N>)")))
    override = copy.deepcopy(QUICK_PARAMS) if args.quick else {}
    if args.train_epochs:
        override.setdefault("train", {})["epochs"] = args.train_epochs
    name = f"repro_train_epochs{args.train_epochs}" if args.train_epochs else "repro"
    repo = make_repo(override)
    log(f"temp repo {repo}")
    dvc = [str(Path(sys.executable).parent / "dvc")]
    floor = timed(dvc + ["--version"], repo, 60)
    stages: dict[str, dict] = {}
    failed = None
    for stage in STAGES:
        if failed:
            stages[stage] = {"status": "not run", "reason": f"{failed} did not finish"}
            continue
        log(f"dvc repro -s {stage}")
        res = timed(dvc + ["repro", "-s", stage], repo, args.stage_timeout)
        res["status"] = "ok" if res["rc"] == 0 else ("timeout" if res["rc"] == "timeout" else "failed")
        if res["status"] != "ok":
            if any(re.search(r"exited with -\d+", line) for line in res["tail"]):
                res["status"] = "killed by a signal (not by this script)"
            res["progress"] = progress_projection(res["tail"])
        stages[stage] = res
        if res["status"] != "ok":
            failed = stage
    complete = failed is None
    noop = timed(dvc + ["repro"], repo, 600) if complete else {"status": "not run"}
    status = timed(dvc + ["status"], repo, 600) if complete else {"status": "not run"}
    if complete:
        noop["did_nothing"] = not any("Running stage" in line for line in noop["tail"])
    total = sum(s.get("seconds", 0.0) for s in stages.values())
    if not args.keep:
        shutil.rmtree(repo, ignore_errors=True)
    per = ", ".join(f"{k} {v['seconds']:.0f}s" if "seconds" in v else f"{k} not run" for k, v in stages.items())
    total_txt = f"{total:.0f} s" if complete else f">= {total:.0f} s (stopped at {failed}: {stages[failed]['status']})"
    noop_txt = f"no-op {noop['seconds']:.1f} s" if complete else "no-op not run"
    summary = (f"dvc repro {total_txt} [{per}]; {noop_txt}; dvc --version {floor['seconds']:.2f} s; targets total <= "
               f"{TARGET_TOTAL_S:.0f} s: {'met' if complete and total <= TARGET_TOTAL_S else 'MISSED'}, no-op <= "
               f"{TARGET_NOOP_S:.0f} s: {'met' if complete and noop['seconds'] <= TARGET_NOOP_S else 'MISSED/not run'}")
    write_result(name, args.quick, {
        "params_override": override, "stages": stages, "total_s": round(total, 2),
        "complete": complete, "noop_repro": noop, "dvc_status": status, "floor_dvc_version": floor,
        "ratio_noop_vs_dvc_version": ratio(noop["seconds"], floor["seconds"]) if complete else None,
        "targets": {"total_s": TARGET_TOTAL_S, "noop_s": TARGET_NOOP_S},
        "target_met": {"total": (total <= TARGET_TOTAL_S) if complete else (False if total > TARGET_TOTAL_S else None),
                       "noop": (noop["seconds"] <= TARGET_NOOP_S) if complete else None}}, summary)


if __name__ == "__main__":
    main()
