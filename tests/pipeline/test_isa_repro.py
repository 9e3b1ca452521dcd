"""Same seed, same bytes: the tiny pipeline's dataset and cache do not depend on the CPU's instruction set.

The reference repo ran `dvc repro` natively (AVX2 here). This module reruns `download` and `preprocess` with numpy,
OpenCV and torch forced onto their baseline code paths and asserts byte-identical outputs, and it pins the DVC
hashes of both outputs to `golden_hashes.json`, so a clone on another machine that drifts fails here first.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from pipeline_repo import PipelineRepo, md5_file

pytestmark = pytest.mark.slow
GOLDEN = Path(__file__).with_name("golden_hashes.json")
# Every SIMD level above the x86-64 baseline that numpy, OpenCV and torch dispatch to at run time.
FORCE_BASELINE = {
    "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR",
    "OPENCV_CPU_DISABLE": "AVX512_SKX,AVX2,AVX,FMA3,FP16",
    "ATEN_CPU_CAPABILITY": "default",
}


def _tree_md5(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): md5_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_forced_baseline_code_paths_write_the_same_bytes(built_repo: PipelineRepo, tmp_path: Path):
    env = dict(os.environ, PYTHONPATH=str(built_repo.root / "src"), **FORCE_BASELINE)
    data, cache = tmp_path / "nuplan_mini", tmp_path / "cache"
    for args in (["download", "--out", str(data), "--report", str(tmp_path / "download.json")],
                 ["preprocess", "--data", str(data), "--out", str(cache), "--report", str(tmp_path / "pre.json")]):
        subprocess.run(["python", "-m", f"drivepipe.cli.{args[0]}", "--params", "params.yaml", *args[1:]],
                       cwd=built_repo.root, env=env, check=True, capture_output=True, timeout=600)
    check = subprocess.run(["python", "-c", "import numpy._core._multiarray_umath as m; "
                            "print(m.__cpu_features__['X86_V3'])"], env=env, capture_output=True, text=True)
    assert check.stdout.strip() == "False", "numpy did not take the forced baseline path"
    for produced, reference in ((data, built_repo.root / "data/nuplan_mini"), (cache, built_repo.root / "data/cache")):
        got, want = _tree_md5(produced), _tree_md5(reference)
        assert got.keys() == want.keys()
        differ = [k for k in want if got[k] != want[k]]
        assert not differ, f"{len(differ)} files differ under forced baseline SIMD, e.g. {differ[:5]}"


def test_dvc_hashes_match_the_committed_golden_values(built_repo: PipelineRepo):
    got = {"download": built_repo.out_hash("download", "data/nuplan_mini"),
           "preprocess": built_repo.out_hash("preprocess", "data/cache")}
    want = json.loads(GOLDEN.read_text())
    assert got == want, (f"tiny-profile output hashes {got} differ from {GOLDEN.name} {want}: either the generator "
                         "or preprocessing changed on purpose (then write these values into the file) or this "
                         "machine computes different bytes (a reproducibility bug)")
