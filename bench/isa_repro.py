"""Same seed on two instruction sets: which outputs stay bitwise equal and how far the metrics move.

Runs `dvc repro evaluate` (download → preprocess → train → evaluate) twice in throwaway repos: once natively and
once with numpy, OpenCV and torch forced onto their baseline x86-64 code paths (the environment variables of
tests/pipeline/test_isa_repro.py). Reports, per output, whether the bytes are equal — dataset and cache DVC hashes,
exported weights — and the absolute difference of every headline metric. Torch's CPU kernels (convolutions,
matmuls, reductions) sum in a different order per vector width, so the trained weights are expected to differ in
the last bits across instruction sets; this measures what that does to the numbers `dvc metrics diff` shows.
Floor: the metric difference between the two runs is compared with nothing else; read it next to the seed spread
of bench/seeds.py, which is the noise a reader must already accept.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from _common import log, parse_args, write_result
from repro import QUICK_PARAMS, env_for, make_repo

FORCE_BASELINE = {
    "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR",
    "OPENCV_CPU_DISABLE": "AVX512_SKX,AVX2,AVX,FMA3,FP16",
    "ATEN_CPU_CAPABILITY": "default",
}


def _flat(d: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def _tree_md5(root: Path) -> str:
    h = hashlib.md5()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def run_once(override: dict, extra_env: dict[str, str], timeout: float) -> dict:
    repo = make_repo(override)
    env = {**env_for(repo), **extra_env}
    dvc = [str(Path(sys.executable).parent / "dvc")]
    proc = subprocess.run(dvc + ["repro", "evaluate"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"dvc repro failed in {repo}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    result = {
        "data": lock["download"]["outs"][0]["md5"],
        "cache": lock["preprocess"]["outs"][0]["md5"],
        "weights": _tree_md5(repo / "models" / params["train"]["experiment"]),
        "metrics": _flat(json.loads((repo / "reports" / "evaluate" / "metrics.json").read_text())),
    }
    shutil.rmtree(repo, ignore_errors=True)
    return result


def _simd_levels() -> dict[str, bool]:
    from numpy._core._multiarray_umath import __cpu_features__ as features

    return {k: bool(features.get(k)) for k in ("X86_V2", "X86_V3", "X86_V4")}


def main() -> None:
    args = parse_args(__doc__, lambda p: (p.add_argument("--train-epochs", type=int, default=0),
                                          p.add_argument("--timeout", type=float, default=3600.0)))
    override = copy.deepcopy(QUICK_PARAMS) if args.quick else {}
    if args.train_epochs:
        override.setdefault("train", {})["epochs"] = args.train_epochs
    log("native run")
    native = run_once(override, {}, args.timeout)
    log("forced-baseline run")
    forced = run_once(override, FORCE_BASELINE, args.timeout)
    same = {k: native[k] == forced[k] for k in ("data", "cache", "weights")}
    diffs = {k: abs(native["metrics"][k] - forced["metrics"][k]) for k in native["metrics"]
             if k in forced["metrics"]}
    worst = sorted(diffs.items(), key=lambda kv: -kv[1])[:10]
    summary = (f"bitwise equal: dataset {same['data']}, cache {same['cache']}, weights {same['weights']}; "
               f"largest metric differences: " + ", ".join(f"{k} {v:.4f}" for k, v in worst[:5]))
    write_result("isa_repro", args.quick, {"params_override": override, "env_forced": FORCE_BASELINE,
                                           "bitwise_equal": same, "metric_abs_diff": diffs, "native": native,
                                           "forced": forced, "native_simd": _simd_levels()}, summary)


if __name__ == "__main__":
    main()
