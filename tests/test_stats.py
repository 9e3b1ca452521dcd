"""The clustered bootstrap against cases small enough to work out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from drivepipe.stats import cluster_bootstrap, mean_ci, percentile_interval, ratio_of_sums_ci, resample_indices


def test_two_clusters_exhaustive_distribution():
    # Two scenes with per-scene sums (I, U) = (1, 4) and (3, 4). A resample draws 2 scenes with replacement:
    # {a,a} -> 2/8, {a,b} or {b,a} -> 4/8, {b,b} -> 6/8, each pair with probability 1/4. So the 2.5 % and
    # 97.5 % percentiles of many resamples are 0.25 and 0.75, and about half the estimates are 0.5.
    lo, hi = ratio_of_sums_ci([1.0, 3.0], [4.0, 4.0], num_resamples=4000)
    assert (lo, hi) == (0.25, 0.75)


def test_identical_clusters_give_a_point_interval():
    assert mean_ci([[2.0, 2.0], [2.0], [2.0, 2.0, 2.0]]) == (2.0, 2.0)


def test_mean_ci_pools_members_not_cluster_means():
    # Clusters of different size: the pooled mean of {0 x 9} and {10} is 1.0, not the mean of means 5.0. The
    # resamples {a,a}, {a,b}, {b,b} have pooled means 0/18, 10/10 and 20/2, a quarter of them at each extreme.
    values = [[0.0] * 9, [10.0]]
    possible = {0.0, 10.0 / 10.0, 10.0}  # {a,a}, {a,b}, {b,b}
    lo, hi = mean_ci(values, num_resamples=2000)
    assert lo in possible and hi in possible and lo == 0.0 and hi == 10.0


def test_cluster_bootstrap_matches_vectorised_ratio():
    rng = np.random.default_rng(3)
    num, den = rng.random(7), rng.random(7) + 1.0
    generic = cluster_bootstrap(7, lambda idx: num[idx].sum() / den[idx].sum(), seed=5)
    vectorised = ratio_of_sums_ci(num, den, seed=5)
    assert generic == pytest.approx(vectorised)


def test_resamples_are_seeded_and_cover_all_clusters():
    a = resample_indices(5, num_resamples=200, seed=1)
    assert np.array_equal(a, resample_indices(5, num_resamples=200, seed=1))
    assert not np.array_equal(a, resample_indices(5, num_resamples=200, seed=2))
    assert set(np.unique(a)) == set(range(5))


def test_degenerate_inputs():
    assert ratio_of_sums_ci([1.0], [2.0]) is None  # one cluster says nothing about the spread
    assert cluster_bootstrap(1, lambda idx: 0.0) is None
    assert percentile_interval(np.array([np.nan, np.nan])) is None
    with pytest.raises(ValueError, match="equal-length"):
        ratio_of_sums_ci([1.0, 2.0], [1.0])


def test_percentile_interval_is_the_central_95_percent():
    estimates = np.arange(1, 1001, dtype=np.float64)  # 1..1000
    lo, hi = percentile_interval(estimates)
    assert lo == pytest.approx(np.percentile(estimates, 2.5)) and hi == pytest.approx(np.percentile(estimates, 97.5))
    assert lo <= estimates[25] and estimates[974] <= hi
