"""The bytes of the dataset and the cache depend on the seed and the params, not on the CPU that made them.

Two checks: (1) statically, the modules that decide those bytes call none of numpy's functions whose
implementation is chosen per instruction set at run time (transcendental ufuncs, BLAS/LAPACK via `@`, `dot`,
`linalg`, `einsum`) — they use `drivepipe.utils.detmath` instead; (2) dynamically, generating and preprocessing a
small world with numpy, OpenCV and torch forced onto their baseline code paths gives the same bytes as the native
run. (This machine has no AVX-512, so (2) cannot exercise the AVX-512 kernels; (1) is what keeps them out.)
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "drivepipe"
# Modules whose arithmetic reaches data/nuplan_mini or data/cache (show.py only draws pictures for people).
BYTE_DECIDING = sorted(
    [p for d in ("world", "preprocess", "nuplan", "cache") for p in (SRC / d).glob("*.py") if p.name != "show.py"]
    + [SRC / "utils" / "geometry.py", SRC / "mapdata.py", SRC / "sample.py", SRC / "vehicle.py",
       SRC / "schema.py", SRC / "world_state.py", SRC / "idm.py"])
DISPATCHED = {  # numpy functions with per-ISA implementations (SVML/AVX-512 kernels, OpenBLAS kernels per CPU)
    "sin", "cos", "tan", "arcsin", "arccos", "arctan", "arctan2", "sinh", "cosh", "tanh", "arcsinh", "arccosh",
    "arctanh", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "cbrt", "power", "float_power", "hypot",
    "dot", "vdot", "inner", "matmul", "tensordot", "einsum", "linalg", "deg2rad", "rad2deg", "degrees", "radians",
}
SAFE_POWERS = (2, 0.5, 1, -1)  # numpy maps these to square/sqrt/copy/reciprocal, which round exactly


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(SRC)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "np" \
                and node.attr in DISPATCHED:
            found.append(f"{where}: np.{node.attr}")
        elif isinstance(node, ast.BinOp | ast.AugAssign) and isinstance(node.op, ast.MatMult):
            found.append(f"{where}: @ (BLAS)")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and not (
                isinstance(node.right, ast.Constant) and node.right.value in SAFE_POWERS) and not (
                isinstance(node.left, ast.Constant) and isinstance(node.left.value, int | float)):  # 2 ** k, 2.0 ** 64
            found.append(f"{where}: ** {ast.unparse(node.right)}")
    return found


def test_byte_deciding_modules_use_no_isa_dispatched_numpy():
    bad = [v for p in BYTE_DECIDING for v in _violations(p)]
    assert not bad, "use drivepipe.utils.detmath instead of:\n" + "\n".join(bad)


def test_the_static_check_catches_each_kind(tmp_path):
    probe = SRC / "_isa_probe_tmp.py"
    probe.write_text("import numpy as np\na = np.sin(1.0)\nb = x @ y\nc = x ** 3\nd = np.linalg.norm(x)\ne = x ** 2 + 2 ** k\n")
    try:
        kinds = [v.split(": ", 1)[1] for v in _violations(probe)]
    finally:
        probe.unlink()
    assert sorted(kinds) == sorted(["np.sin", "@ (BLAS)", "** 3", "np.linalg"])  # and not "** 2" or "2 ** k"
