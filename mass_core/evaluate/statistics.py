"""Paired differences with a hierarchical bootstrap confidence interval.

Two methods evaluated on the same units (test cases) under the same
clusters (training seeds) give one paired difference per (cluster, unit).
:func:`paired_bootstrap` reports the mean difference of each group and a
percentile interval from a two-level bootstrap: clusters are resampled with
replacement, then units with replacement, and the mean difference over the
resampled (cluster, unit) grid is recomputed.

The design is crossed, not nested: every seed is evaluated on the same test
cases. One unit resample is therefore applied to all chosen clusters, so that
a case that is hard for one seed stays in or out for every seed. Resampling
cases independently per seed would treat them as new cases for each seed and
shrink the case-sampling variance as if there were seeds x cases independent
cases, which there are not. With one cluster the interval is the ordinary
(percentile) bootstrap over units.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["BOOTSTRAP_COLUMNS", "paired_bootstrap"]

BOOTSTRAP_COLUMNS = ("diff_mean", "ci_low", "ci_high", "n_clusters", "n_units")


def paired_bootstrap(pairs: pd.DataFrame, keys: Sequence[str], value: str | tuple[str, str], *, cluster: str = "seed",
                     unit: str = "case_id", n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Mean paired difference and its hierarchical bootstrap percentile interval, per group of ``keys``.

    Args:
        pairs: one row per (``keys``, ``cluster``, ``unit``); rows with a NaN difference are left out.
        keys: grouping columns (for example dataset, method, budget); one output row per group.
        value: a difference column, or two columns ``(a, b)`` whose difference ``a - b`` is used.
        cluster: the outer resampling level (training seed).
        unit: the inner resampling level (test case), crossed with ``cluster``.
        n_resamples: bootstrap resamples per group.
        confidence: coverage of the interval (0.95: the 2.5th and 97.5th percentiles).
        seed: seed of the resampling; every group restarts from it, so a group's
            interval does not depend on which other groups are present.

    Returns:
        ``keys`` and :data:`BOOTSTRAP_COLUMNS`: the mean over all (cluster, unit)
        pairs, the interval, and the numbers of clusters and units; sorted by ``keys``.

    Example:
        Differences 0.1 and 0.3 on two cases, one seed: ``diff_mean`` 0.2, the
        interval within [0.1, 0.3] (a resampled mean is 0.1, 0.2 or 0.3).
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    difference = pairs[value] if isinstance(value, str) else pairs[value[0]] - pairs[value[1]]
    frame = pairs[[*keys, cluster, unit]].assign(_difference=difference).dropna(subset=["_difference"])
    if frame.duplicated([*keys, cluster, unit]).any():
        raise ValueError(f"pairs must hold one row per ({', '.join([*keys, cluster, unit])})")
    rows = []
    for key, group in frame.groupby(list(keys), sort=True):
        grid = group.pivot(index=cluster, columns=unit, values="_difference").to_numpy(dtype=float)
        low, high = _interval(grid, n_resamples, confidence, np.random.default_rng(seed))
        rows.append([*(key if isinstance(key, tuple) else (key,)), float(np.nanmean(grid)), low, high, *grid.shape])
    return pd.DataFrame(rows, columns=[*keys, *BOOTSTRAP_COLUMNS])


def _interval(grid: np.ndarray, n_resamples: int, confidence: float, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile interval of the mean of ``grid`` (clusters x units, NaN = missing pair) over two-level resamples."""
    n_clusters, n_units = grid.shape
    # A resample is a pair of multiplicity vectors; the mean over the resampled
    # grid is then a weighted mean, without materialising n_resamples grids.
    cluster_counts = rng.multinomial(n_clusters, np.full(n_clusters, 1 / n_clusters), size=n_resamples)
    unit_counts = rng.multinomial(n_units, np.full(n_units, 1 / n_units), size=n_resamples)
    present = ~np.isnan(grid)
    totals = np.einsum("bc,cu,bu->b", cluster_counts, np.where(present, grid, 0.0), unit_counts)
    weights = np.einsum("bc,cu,bu->b", cluster_counts, present.astype(float), unit_counts)
    # A resample drawing only missing pairs (possible with a ragged grid) has no mean.
    means = totals[weights > 0] / weights[weights > 0]
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)
