"""Calibration pickles of the nuPlan `camera` / `lidar` tables, both directions.

Real DBs store `translation`, `rotation`, `intrinsic` and `distortion` as protocol-5 pickles of list subclasses
defined in `nuplan.database.common.data_types` (`Translation`, `Rotation`, `CameraIntrinsic`). We cannot import
that package, and `pickle.loads` on untrusted bytes can run arbitrary code, so reading goes through a restricted
unpickler that maps those three classes to `list`, rebuilds numpy scalars without numpy's own reconstructor, and
refuses every other global.

Writing emits exactly the devkit globals through stand-in classes that only carry the right `__module__` /
`__qualname__`. Elements are plain Python floats, not numpy float64 scalars (what real files hold): a NumPy >= 2
pickle of a float64 references `numpy._core.multiarray.scalar`, which NumPy 1.x devkit environments may fail to
import, whereas the devkit's own synthetic test DB stores plain numbers in these classes and reads them fine.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterable
from typing import Any

import numpy as np

from drivepipe.errors import DataError

PROTOCOL = 5
_DEVKIT_MODULE = "nuplan.database.common.data_types"
_DEVKIT_CLASSES = ("Translation", "Rotation", "CameraIntrinsic")
_NUMPY_SCALAR = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}


# ------------------------------------------------------------------------------------------------------- writing
def _stand_in(name: str) -> type:
    """A list subclass that pickles as the global `nuplan.database.common.data_types.<name>`."""
    return type(name, (list,), {"__module__": _DEVKIT_MODULE, "__qualname__": name})


_STAND_INS: dict[str, type] = {name: _stand_in(name) for name in _DEVKIT_CLASSES}


class _DevkitPickler(pickle._Pickler):  # the pure-Python pickler: its save_global can be overridden
    """Pickler that writes the stand-in classes by name instead of importing their (absent) module."""

    def save_global(self, obj: Any, name: str | None = None) -> None:  # noqa: D102 - see base class
        if any(obj is cls for cls in _STAND_INS.values()):
            self.save(obj.__module__)
            self.save(obj.__qualname__)
            self.write(pickle.STACK_GLOBAL)
            self.memoize(obj)
            return
        super().save_global(obj, name)


def _dumps(obj: Any) -> bytes:
    buf = io.BytesIO()
    _DevkitPickler(buf, protocol=PROTOCOL).dump(obj)
    return buf.getvalue()


def _floats(values: Iterable[Any], n: int, what: str) -> list[float]:
    out = [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]
    if len(out) != n:
        raise ValueError(f"{what}: expected {n} values, got {len(out)}")
    return out


def dumps_translation(xyz: Iterable[float]) -> bytes:
    """(3,) translation in metres (sensor -> ego) -> devkit `Translation` pickle bytes."""
    return _dumps(_STAND_INS["Translation"](_floats(xyz, 3, "translation")))


def dumps_rotation(wxyz: Iterable[float]) -> bytes:
    """(4,) quaternion (w, x, y, z) (sensor -> ego) -> devkit `Rotation` pickle bytes."""
    return _dumps(_STAND_INS["Rotation"](_floats(wxyz, 4, "rotation")))


def dumps_intrinsic(K_3x3: Any) -> bytes:
    """(3, 3) pinhole matrix in pixels -> devkit `CameraIntrinsic` pickle (3 row lists of floats)."""
    flat = _floats(K_3x3, 9, "intrinsic")
    return _dumps(_STAND_INS["CameraIntrinsic"]([flat[0:3], flat[3:6], flat[6:9]]))


def dumps_distortion(d5: Iterable[float]) -> bytes:
    """(5,) distortion k1, k2, p1, p2, k3 -> plain pickled list of floats (as in real DBs)."""
    return _dumps(_floats(d5, 5, "distortion"))


# ------------------------------------------------------------------------------------------------------- reading
class _CalibList(list):
    """What the devkit list subclasses load as; accepts a BUILD state in case a writer attached attributes."""


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    """Safe replacement for numpy's scalar reconstructor: numeric dtypes from raw bytes only."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf" or not isinstance(data, bytes):
        raise pickle.UnpicklingError(f"unsupported numpy scalar (dtype {dtype!r})")
    if len(data) != dtype.itemsize:
        raise pickle.UnpicklingError(f"numpy scalar has {len(data)} bytes, dtype {dtype} needs {dtype.itemsize}")
    return np.frombuffer(data, dtype=dtype, count=1)[0].item()


class _ForbiddenClass(Exception):
    pass


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the devkit calibration classes and numpy scalar reconstruction; refuses all else."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - see base class
        if module == _DEVKIT_MODULE and name in _DEVKIT_CLASSES:
            return _CalibList
        if (module, name) in _NUMPY_SCALAR:
            return _numpy_scalar
        if module == "numpy" and name == "dtype":
            return np.dtype
        raise _ForbiddenClass(f"{module}.{name}")


# Real calibration pickles are a few hundred bytes holding at most 3 x 3 numbers. Bounding the bytes, the nesting
# and the number count keeps a crafted pickle (memo-shared lists that expand to 2^28 numbers, 100,000-deep nesting)
# from exhausting memory or the stack: it is answered with a DataError like any other bad calibration.
MAX_PICKLE_BYTES = 16 * 1024
MAX_DEPTH = 2  # intrinsic: a list of 3 row lists
MAX_NUMBERS = 16  # intrinsic: 9


def _to_plain(obj: Any, source: str, depth: int = 1, budget: list[int] | None = None) -> Any:
    """Nested lists/tuples of numbers -> nested lists of Python floats, within MAX_DEPTH and MAX_NUMBERS."""
    budget = [MAX_NUMBERS] if budget is None else budget
    if isinstance(obj, (list, tuple)):
        if depth > MAX_DEPTH:
            raise DataError(source, f"calibration pickle is nested deeper than {MAX_DEPTH} lists")
        return [_to_plain(v, source, depth + 1, budget) for v in obj]
    if isinstance(obj, (int, float, np.integer, np.floating)) and not isinstance(obj, bool):
        budget[0] -= 1
        if budget[0] < 0:
            raise DataError(source, f"calibration pickle holds more than {MAX_NUMBERS} numbers")
        return float(obj)
    raise DataError(source, f"calibration pickle holds an unexpected {type(obj).__name__} value")


def loads_calibration(blob: bytes, source: str) -> list:
    """Decode one calibration BLOB into plain nested lists of floats.

    Args:
        blob: the pickle bytes from a `camera` / `lidar` column.
        source: names the file/row in error messages (e.g. "log.db:camera.CAM_F0.intrinsic").

    Returns:
        translation -> [x, y, z]; rotation -> [w, x, y, z]; intrinsic -> [[...], [...], [...]];
        distortion -> [k1, k2, p1, p2, k3].

    Raises:
        DataError: the pickle references any class other than the allowed ones, is truncated or garbage,
            is too big or too deeply nested, or does not decode to a list of at most MAX_NUMBERS numbers.
    """
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise DataError(source, f"calibration must be a pickle BLOB, got {type(blob).__name__}")
    if len(blob) > MAX_PICKLE_BYTES:
        raise DataError(source, f"calibration pickle is {len(blob)} bytes (a real one is < {MAX_PICKLE_BYTES})")
    try:
        obj = _RestrictedUnpickler(io.BytesIO(bytes(blob))).load()
    except _ForbiddenClass as e:
        raise DataError(source, f"calibration pickle references forbidden class {e}") from None
    except Exception as e:  # truncated / garbage bytes surface as many exception types
        raise DataError(source, f"calibration pickle is truncated or corrupt ({type(e).__name__}: {e})") from None
    if not isinstance(obj, list):
        raise DataError(source, f"calibration pickle holds a {type(obj).__name__}, expected a list")
    return _to_plain(obj, source)
