"""ISA-independent float math: as accurate as numpy's own functions, with the same special values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drivepipe.utils import detmath


def _ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b) / np.spacing(np.maximum(np.abs(b), 1e-300))


RNG = np.random.default_rng(0)
ANGLES = np.concatenate([RNG.uniform(-10, 10, 20000), RNG.uniform(-1e5, 1e5, 2000), [0.0, -0.0, math.pi,
                         -math.pi / 2, 1e-9, 2 * math.pi]])


def test_sin_cos_within_two_ulps_of_the_c_library():
    s, c = detmath.sincos(ANGLES)
    ref_s = np.array([math.sin(a) for a in ANGLES])
    ref_c = np.array([math.cos(a) for a in ANGLES])
    # absolute error against the value scale (1.0) where the result crosses zero
    assert np.max(np.abs(s - ref_s)) < 4e-16 and np.max(np.abs(c - ref_c)) < 4e-16
    away = np.abs(ref_s) > 1e-3
    assert np.max(_ulps(s[away], ref_s[away])) <= 2


def test_arctan2_all_quadrants_and_signed_zeros():
    y, x = RNG.normal(size=(2, 20000)) * np.array([[1.0], [1e3]])
    ref = np.arctan2(y, x)
    assert np.max(np.abs(detmath.arctan2(y, x) - ref)) < 5e-16
    for yy, xx in [(0.0, 0.0), (-0.0, 0.0), (0.0, -0.0), (-0.0, -0.0), (0.0, -3.0), (-0.0, -3.0), (2.0, 0.0),
                   (-2.0, 0.0), (1.0, 1.0), (-1.0, -1.0)]:
        got, want = detmath.arctan2(yy, xx), math.atan2(yy, xx)
        assert got == pytest.approx(want, abs=1e-15) and math.copysign(1, got) == math.copysign(1, want)


def test_arcsin_arctan_tan_exp_hypot():
    u = RNG.uniform(-1, 1, 5000)
    assert np.max(np.abs(detmath.arcsin(u) - np.arcsin(u))) < 1e-15
    assert np.max(np.abs(detmath.arctan(u * 50) - np.arctan(u * 50))) < 5e-16
    a = RNG.uniform(-1.4, 1.4, 5000)
    assert np.max(_ulps(detmath.tan(a), np.tan(a))) <= 4
    x = RNG.uniform(-700, 700, 5000)
    assert np.max(_ulps(detmath.exp(x), np.exp(x))) <= 2
    assert detmath.exp(-800.0) == 0.0 and detmath.exp(800.0) == math.inf and detmath.exp(0.0) == 1.0
    assert detmath.hypot(3.0, 4.0) == 5.0


def test_scalars_stay_floats_and_arrays_keep_their_shape():
    assert isinstance(detmath.sin(0.5), float) and isinstance(detmath.arctan2(1.0, 2.0), float)
    assert detmath.cos(np.zeros((3, 2))).shape == (3, 2)


def test_linear_algebra_matches_blas_and_is_exact_where_it_should_be():
    R = RNG.normal(size=(3, 3))
    p = RNG.normal(size=(100, 3))
    np.testing.assert_allclose(detmath.rotate(p, R), p @ R.T, rtol=0, atol=1e-14)
    A, B = RNG.normal(size=(4, 4)), RNG.normal(size=(4, 4))
    np.testing.assert_allclose(detmath.matmul(A, B), A @ B, atol=1e-14)
    np.testing.assert_allclose(detmath.matmul(A, B[:, 0]), A @ B[:, 0], atol=1e-14)
    assert detmath.dot([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == 32.0
    np.testing.assert_allclose(detmath.norm_rows(p), np.linalg.norm(p, axis=1), atol=1e-15)
    # the sum order is fixed (x, then y, then z), so the result is exactly this expression
    q = p[0]
    assert detmath.dot(q, q) == (q[0] * q[0] + q[1] * q[1]) + q[2] * q[2]


def test_scalar_fast_paths_give_the_array_paths_bits():
    ys = np.concatenate([ANGLES[::20], (np.arange(-9, 10) + 0.5) * math.pi / 2, [-0.0, 5e-324, -1e-300]])
    xs = np.roll(ys, 7)
    s, c = detmath.sincos(ys)
    a = detmath.arctan2(ys, xs)
    fast = np.array([detmath.sincos(float(v)) + (detmath.arctan2(float(v), float(w)),) for v, w in zip(ys, xs)])
    assert fast.tobytes() == np.stack([s, c, a], axis=1).tobytes()
    assert detmath.arctan2(-0.0, -0.0) == -math.pi and math.copysign(1.0, detmath.sincos(-0.0)[0]) == 1.0
