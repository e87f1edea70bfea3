from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mass_core.evaluate.statistics import BOOTSTRAP_COLUMNS, paired_bootstrap


def grid(values: np.ndarray, group: str = "a") -> pd.DataFrame:
    """Long frame of a (seeds x cases) array of paired values."""
    seeds, cases = np.meshgrid(range(values.shape[0]), range(values.shape[1]), indexing="ij")
    return pd.DataFrame({"group": group, "seed": seeds.ravel(), "case_id": [f"c{c:02d}" for c in cases.ravel()],
                         "value": values.ravel()})


def interval(frame: pd.DataFrame, value="value", **kwargs) -> tuple[float, float]:
    row = paired_bootstrap(frame, ["group"], value, **kwargs).iloc[0]
    return row["ci_low"], row["ci_high"]


def test_constant_difference_has_a_point_interval():
    rng = np.random.default_rng(0)
    scratch = rng.uniform(0.2, 0.8, size=(3, 10))
    frame = grid(scratch).rename(columns={"value": "scratch"}).assign(method=(scratch + 0.07).ravel())
    result = paired_bootstrap(frame, ["group"], ("method", "scratch")).iloc[0]
    assert (result["diff_mean"], result["ci_low"], result["ci_high"]) == pytest.approx((0.07, 0.07, 0.07), abs=1e-12)
    assert (result["n_clusters"], result["n_units"]) == (3, 10)


def test_shifting_the_reference_shifts_the_interval():
    rng = np.random.default_rng(1)
    frame = grid(rng.normal(0.6, 0.1, size=(3, 12))).rename(columns={"value": "method"})
    frame["scratch"] = frame["method"] - rng.normal(0.02, 0.05, size=len(frame))
    low, high = interval(frame, ("method", "scratch"))
    shifted_low, shifted_high = interval(frame.assign(scratch=frame["scratch"] + 0.03), ("method", "scratch"))
    assert (shifted_low, shifted_high) == pytest.approx((low - 0.03, high - 0.03), abs=1e-12)
    assert high - low > 0.01


def test_one_seed_is_the_percentile_case_bootstrap():
    differences = np.random.default_rng(2).normal(0.05, 0.1, size=20)
    low, high = interval(grid(differences[None, :]))
    reference = stats.bootstrap((differences,), np.mean, n_resamples=10_000, method="percentile", random_state=0)
    assert low == pytest.approx(reference.confidence_interval.low, abs=0.01)
    assert high == pytest.approx(reference.confidence_interval.high, abs=0.01)


def test_seeds_that_disagree_widen_the_interval():
    rng = np.random.default_rng(3)
    # Each seed shifts every case by its own offset: a systematic seed effect.
    values = rng.normal(0.05, 0.02, size=(4, 15)) + np.array([-0.1, 0.0, 0.05, 0.15])[:, None]
    low, high = interval(grid(values))
    # Resampling cases only (all seeds kept): the case bootstrap of the per-case means over seeds.
    case_low, case_high = interval(grid(values.mean(axis=0, keepdims=True)))
    assert high - low > 3 * (case_high - case_low)
    assert low < values.mean() < high


def test_mean_counts_and_missing_pairs():
    frame = pd.DataFrame({"group": "a", "seed": [0, 0, 1, 1], "case_id": ["x", "y", "x", "y"],
                          "value": [0.1, 0.3, 0.2, np.nan]})
    result = paired_bootstrap(frame, ["group"], "value").iloc[0]
    assert result["diff_mean"] == pytest.approx(0.2)
    assert (result["n_clusters"], result["n_units"]) == (2, 2)
    assert 0.1 <= result["ci_low"] <= result["ci_high"] <= 0.3


def test_groups_are_independent_and_reruns_identical():
    rng = np.random.default_rng(4)
    a, b = grid(rng.normal(0, 0.1, size=(2, 8)), "a"), grid(rng.normal(0.2, 0.1, size=(3, 5)), "b")
    both = paired_bootstrap(pd.concat([b, a]), ["group"], "value")
    assert list(both.columns) == ["group", *BOOTSTRAP_COLUMNS] and list(both["group"]) == ["a", "b"]
    pd.testing.assert_frame_equal(both.iloc[[0]], paired_bootstrap(a, ["group"], "value"))
    pd.testing.assert_frame_equal(both, paired_bootstrap(pd.concat([a, b]), ["group"], "value"))


def test_bad_arguments():
    frame = grid(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="one row per"):
        paired_bootstrap(pd.concat([frame, frame]), ["group"], "value")
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap(frame, ["group"], "value", confidence=95)
    with pytest.raises(ValueError, match="n_resamples"):
        paired_bootstrap(frame, ["group"], "value", n_resamples=0)
