"""Float math whose results are the same on every x86-64 CPU: the arithmetic of every path that decides bytes.

Why: numpy picks a different implementation of the transcendental ufuncs per instruction set at run time (on
AVX-512 machines `np.sin`, `np.cos`, `np.arctan2`, `np.exp`, `np.power`... run SIMD kernels that other machines
cannot run, and those round differently in the last bit), and `@` / `np.dot` / `np.linalg` go to OpenBLAS, which
also picks kernels per CPU. One flipped bit in a heading moves a rendered edge by a pixel somewhere in a dataset of
ten thousand images, so the synthetic data, and the cache made from it, differed between machines.

Every function here is built only from operations IEEE 754 rounds exactly (+, -, *, /, sqrt, rint, ldexp,
comparisons), applied as separate numpy ufuncs (numpy never fuses them), so the result is a function of the input
bits alone. Accuracy is within ~1 ulp of the correctly rounded value over the ranges the pipeline uses (angles up
to ~1e6 rad, exp arguments in the float64 range); Taylor series of enough terms on a reduced argument are used
instead of tuned minimax polynomials because the error terms are far below float64 resolution anyway.

Scalar fast paths: `sincos` (so `sin`, `cos`, `tan`) and `arctan2` (so `arctan` of a scalar) given Python floats
(np.float64 included) or ints run the same IEEE operations, in the same order, on Python floats instead of 0-d
arrays (CPython neither fuses nor reorders float arithmetic, and `math.sqrt` is correctly rounded like np.sqrt),
so they return the same bits at a tenth of the cost; non-finite arguments take the array path.

`tests/test_detmath.py` checks accuracy against numpy; `tests/test_isa_independence.py` checks that the
byte-deciding modules call none of numpy's dispatched functions and that forcing numpy, OpenCV and torch onto
other code paths leaves the dataset and the cache bytes unchanged.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext
from typing import TypeVar

import numpy as np

_F = TypeVar("_F", float, np.ndarray)

with localcontext() as _ctx:  # the reduction constants need more digits than a float holds
    _ctx.prec = 60
    _PI = Decimal("3.141592653589793238462643383279502884197169399375105820974944592")
    _LN2 = Decimal(2).ln()
    # pi/2 and ln 2 split into pieces whose products with integers below 2^20 are exact (33 + 33 + 53 bits).
    _PIO2_HI = float.fromhex("0x1.921fb544p+0")
    _PIO2_MID = float.fromhex("0x1.0b4611a6p-34")
    _PIO2_LO = float(_PI / 2 - Decimal(_PIO2_HI) - Decimal(_PIO2_MID))
    _LN2_HI = float.fromhex("0x1.62e42feep-1")
    _LN2_LO = float(_LN2 - Decimal(_LN2_HI))
_INV_PIO2 = 2.0 / math.pi
_INV_LN2 = 1.0 / math.log(2.0)
_TAN_PI_8 = math.tan(math.pi / 8)

# Horner coefficients in r^2, highest order first: sin r = r + r^3 (c3 + r^2 (c5 + ...)), cos r = 1 + r^2 (...).
_SIN_COEF = tuple((-1.0) ** k / math.factorial(2 * k + 1) for k in range(11, 0, -1))  # r^23 ... r^3
_COS_COEF = tuple((-1.0) ** k / math.factorial(2 * k) for k in range(11, 0, -1))  # r^22 ... r^2
_ATAN_COEF = tuple((-1.0) ** k / (2 * k + 1) for k in range(14, 0, -1))  # w^29 ... w^3
_EXP_COEF = tuple(1.0 / math.factorial(k) for k in range(16, 1, -1))  # r^16 ... r^2


def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _horner(coef: tuple[float, ...], z: _F) -> _F:
    acc = coef[0] * z + coef[1]
    for c in coef[2:]:
        acc = acc * z + c
    return acc


def _fast_scalar(x) -> bool:
    """True for a finite Python float or int (not bool): the arguments the pure-Python fast paths take."""
    return isinstance(x, (float, int)) and not isinstance(x, bool) and math.isfinite(x)


def _out(result: np.ndarray, like):
    """Return a Python float for scalar input (as math.* would) and an array otherwise."""
    return float(result) if np.ndim(like) == 0 and not isinstance(like, np.ndarray) else result


def _reduce_pio2(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x = k * pi/2 + r with |r| <= ~pi/4; returns (r, k mod 4)."""
    k = np.rint(x * _INV_PIO2)
    r = ((x - k * _PIO2_HI) - k * _PIO2_MID) - k * _PIO2_LO
    return r, np.remainder(k, 4.0).astype(np.int64)


def _sin_cos_reduced(r: _F) -> tuple[_F, _F]:
    z = r * r
    return r + r * (z * _horner(_SIN_COEF, z)), 1.0 + z * _horner(_COS_COEF, z)


def sincos(x) -> tuple[np.ndarray, np.ndarray]:
    """(sin x, cos x) of angles in radians, as float64 arrays (or floats for scalar input)."""
    if _fast_scalar(x):
        x = float(x)
        kk = x * _INV_PIO2
        k = math.copysign(float(round(kk)), kk)  # np.rint: half to even, sign kept (rint(-0.3) = -0.0)
        s, c = _sin_cos_reduced(((x - k * _PIO2_HI) - k * _PIO2_MID) - k * _PIO2_LO)  # as `_reduce_pio2`
        return ((s, c), (c, -s), (-s, -c), (-c, s))[int(k % 4.0)]  # % as np.remainder: floor modulo
    xa = _f64(x)
    r, q = _reduce_pio2(xa)
    s, c = _sin_cos_reduced(r)
    sin = np.choose(q, (s, c, -s, -c))
    cos = np.choose(q, (c, -s, -c, s))
    return _out(sin, x), _out(cos, x)


def sin(x):
    """sin of radians; see `sincos`."""
    return sincos(x)[0]


def cos(x):
    """cos of radians; see `sincos`."""
    return sincos(x)[1]


def tan(x):
    """tan of radians (sin / cos)."""
    s, c = sincos(x)
    return s / c


def _atan_unit(u: np.ndarray) -> np.ndarray:
    """atan(u) for 0 <= u <= 1."""
    big = u > _TAN_PI_8
    v = np.where(big, (u - 1.0) / (u + 1.0), u)  # atan(u) = pi/4 + atan((u - 1) / (u + 1)); |v| <= tan(pi/8)
    w = v / (1.0 + np.sqrt(1.0 + v * v))  # atan(v) = 2 atan(w), |w| <= 0.1989
    z = w * w
    atan_v = 2.0 * (w + w * (z * _horner(_ATAN_COEF, z)))
    return np.where(big, math.pi / 4 + atan_v, atan_v)


def _atan_unit_scalar(u: float) -> float:
    """`_atan_unit` of one float: the same operations."""
    big = u > _TAN_PI_8
    v = (u - 1.0) / (u + 1.0) if big else u
    w = v / (1.0 + math.sqrt(1.0 + v * v))
    z = w * w
    atan_v = 2.0 * (w + w * (z * _horner(_ATAN_COEF, z)))
    return math.pi / 4 + atan_v if big else atan_v


def arctan2(y, x):
    """Angle of the vector (x, y) in radians, in [-pi, pi]; arctan2(0, 0) = 0, arctan2(+0, x < 0) = pi."""
    if _fast_scalar(y) and _fast_scalar(x):
        y, x = float(y), float(x)
        ay, ax = abs(y), abs(x)
        steep = ay > ax
        a = _atan_unit_scalar(ax / ay if steep else ay / (ax if ax > 0 else 1.0))
        a = math.pi / 2 - a if steep else a
        a = math.pi - a if math.copysign(1.0, x) < 0 else a
        return -a if math.copysign(1.0, y) < 0 else a
    ya, xa = np.broadcast_arrays(_f64(y), _f64(x))
    ay, ax = np.abs(ya), np.abs(xa)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # only the unselected branch overflows
        steep = ay > ax
        t = np.where(steep, ax / np.where(steep, ay, 1.0), ay / np.where(ax > 0, ax, 1.0))
        a = _atan_unit(t)
    a = np.where(steep, math.pi / 2 - a, a)
    a = np.where(np.signbit(xa), math.pi - a, a)  # signbit, not < 0: arctan2(0, -0) is pi as in C
    return _out(np.where(np.signbit(ya), -a, a), y if np.ndim(y) else x)


def arctan(x):
    """atan of x in radians, in (-pi/2, pi/2)."""
    return arctan2(x, np.ones_like(_f64(x))) if np.ndim(x) else arctan2(float(x), 1.0)


def arcsin(x):
    """asin of x in [-1, 1], radians."""
    xa = _f64(x)
    return _out(arctan2(xa, np.sqrt((1.0 - xa) * (1.0 + xa))), x)


def exp(x):
    """e**x; underflows to 0 below -745 and overflows to inf above ~709.78 like the C library."""
    xa = _f64(x)
    clipped = np.clip(xa, -746.0, 710.0)
    k = np.rint(clipped * _INV_LN2)
    r = (clipped - k * _LN2_HI) - k * _LN2_LO
    p = 1.0 + r + (r * r) * _horner(_EXP_COEF, r)
    with np.errstate(over="ignore"):
        return _out(np.ldexp(p, k.astype(np.int64)), x)


def hypot(x, y):
    """sqrt(x^2 + y^2) without scaling (inputs are metres-scale, far from overflow)."""
    xa, ya = _f64(x), _f64(y)
    return _out(np.sqrt(xa * xa + ya * ya), x if np.ndim(x) else y)


def radians(deg):
    """Degrees to radians (one multiply by a fixed constant)."""
    return _out(_f64(deg) * (math.pi / 180.0), deg)


def degrees(rad):
    """Radians to degrees (one multiply by a fixed constant)."""
    return _out(_f64(rad) * (180.0 / math.pi), rad)


def norm(v) -> float:
    """Euclidean length of one vector, summing squares in index order."""
    return math.sqrt(dot(v, v))


def norm_rows(v_NC) -> np.ndarray:
    """Euclidean norm of each row of an (N, C) array, summing the squares column by column (fixed order)."""
    v = _f64(v_NC)
    acc = v[..., 0] * v[..., 0]
    for c in range(1, v.shape[-1]):
        acc = acc + v[..., c] * v[..., c]
    return np.sqrt(acc)


def rotate(points_NC, R_CC) -> np.ndarray:
    """points @ R.T (each row rotated by R), written out column by column so that no BLAS kernel is involved.

    Args:
        points_NC: (..., C) points; R_CC: (C, C) rotation (or any linear map) applied as R @ p.
    """
    p, R = _f64(points_NC), _f64(R_CC)
    cols = []
    for i in range(R.shape[0]):
        acc = p[..., 0] * R[i, 0]
        for j in range(1, R.shape[1]):
            acc = acc + p[..., j] * R[i, j]
        cols.append(acc)
    return np.stack(cols, axis=-1)


def matmul(A, B) -> np.ndarray:
    """A @ B for small 2-D matrices (transforms), summed in a fixed order without BLAS."""
    return rotate(_f64(B).T, _f64(A)).T if np.ndim(B) == 2 else rotate(_f64(B), _f64(A))


def dot(a, b):
    """Inner product over the last axis, summed in index order: a float for two vectors, else an array."""
    a, b = np.broadcast_arrays(_f64(a), _f64(b))
    acc = a[..., 0] * b[..., 0]
    for i in range(1, a.shape[-1]):
        acc = acc + a[..., i] * b[..., i]
    return float(acc) if acc.ndim == 0 else acc
