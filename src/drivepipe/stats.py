"""Confidence intervals for metrics over correlated samples: a percentile bootstrap that resamples whole clusters.

Samples cut from one scene (or closed-loop ticks of one scenario) are strongly correlated, so resampling samples
would give intervals that are far too narrow. Every interval here resamples *clusters* (scenes, scenarios) with
replacement and recomputes the metric on the pooled members of the drawn clusters, which is the clustered bootstrap
that `docs/metrics.md`-style evaluations name. Resamples are drawn from a seeded PCG64 generator, so an interval is a
function of its inputs and the seed only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

NUM_RESAMPLES = 1000  # bootstrap resamples per interval
LEVEL = 0.95  # two-sided coverage of the percentile interval


def resample_indices(num_clusters: int, *, num_resamples: int = NUM_RESAMPLES, seed: int = 0) -> np.ndarray:
    """(R, C) int64 cluster indices: row r lists the C clusters drawn (with replacement) for resample r."""
    if num_clusters < 1:
        raise ValueError("a bootstrap needs at least one cluster")
    rng = np.random.Generator(np.random.PCG64(seed))
    return rng.integers(0, num_clusters, size=(num_resamples, num_clusters), dtype=np.int64)


def percentile_interval(estimates: np.ndarray, level: float = LEVEL) -> tuple[float, float] | None:
    """(lo, hi) percentile interval of bootstrap estimates, ignoring NaN; None when no estimate is finite."""
    finite = np.asarray(estimates, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return None
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(finite, [tail, 100.0 - tail])
    return float(lo), float(hi)


def cluster_bootstrap(num_clusters: int, statistic: Callable[[np.ndarray], float], *,
                      num_resamples: int = NUM_RESAMPLES, level: float = LEVEL,
                      seed: int = 0) -> tuple[float, float] | None:
    """Percentile interval of `statistic(cluster_indices)` over clustered resamples.

    Args:
        num_clusters: number of clusters C (scenes, scenarios).
        statistic: maps one resample, a (C,) int array of drawn cluster indices (repeats allowed), to the metric
            recomputed on the pooled members of those clusters; may return NaN (e.g. no ground truth drawn).
    Returns:
        (lo, hi), or None with fewer than two clusters (one cluster gives no information about the spread).
    """
    if num_clusters < 2:
        return None
    draws = resample_indices(num_clusters, num_resamples=num_resamples, seed=seed)
    return percentile_interval(np.array([statistic(row) for row in draws]), level)


def ratio_of_sums_ci(numerators: Sequence[float], denominators: Sequence[float], *,
                     num_resamples: int = NUM_RESAMPLES, level: float = LEVEL,
                     seed: int = 0) -> tuple[float, float] | None:
    """Interval of Σnum / Σden with one (num, den) pair per cluster, e.g. IoU = ΣI / ΣU, or a mean = Σx / Σn.

    Vectorised: the pooled sums of every resample are one matrix product of draw counts with the per-cluster sums.
    """
    num = np.asarray(numerators, dtype=np.float64)
    den = np.asarray(denominators, dtype=np.float64)
    if num.shape != den.shape or num.ndim != 1:
        raise ValueError(f"numerators {num.shape} and denominators {den.shape} must be equal-length 1-D")
    if num.size < 2:
        return None
    draws = resample_indices(num.size, num_resamples=num_resamples, seed=seed)
    counts = np.zeros((num_resamples, num.size), dtype=np.float64)
    np.add.at(counts, (np.arange(num_resamples)[:, None], draws), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        estimates = (counts @ num) / (counts @ den)
    return percentile_interval(estimates, level)


def mean_ci(values_by_cluster: Sequence[Sequence[float]], **kwargs) -> tuple[float, float] | None:
    """Interval of the pooled mean of per-member values grouped by cluster (clusters may differ in size)."""
    sums = [float(np.sum(v)) for v in values_by_cluster]
    sizes = [float(len(v)) for v in values_by_cluster]
    return ratio_of_sums_ci(sums, sizes, **kwargs)
