"""Weighted draws of pretraining cases: frequencies follow the weights; equal weights change nothing."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare

from mass_core.pretrain.case_draw import CaseDraw
from mass_core.pretrain.mim import ImageCase, MimConfig, MimTask
from mass_core.pretrain.sampler import task_rng


def test_draw_frequencies_follow_the_weights():
    # The paper's weights for three datasets of 2, 3 and 1 scans: a scan's weight is its dataset's.
    weights = [6, 6, 1.5, 1.5, 1.5, 0.5]
    draw = CaseDraw(len(weights), weights)
    rng = np.random.default_rng(0)
    n = 40_000
    counts = np.bincount([draw(rng) for _ in range(n)], minlength=len(weights))
    expected = np.asarray(weights) / sum(weights) * n
    assert chisquare(counts, expected).pvalue > 1e-3
    # Dataset shares: 12 : 4.5 : 0.5 of 17.
    np.testing.assert_allclose([counts[:2].sum() / n, counts[2:5].sum() / n, counts[5] / n], [12 / 17, 4.5 / 17, 0.5 / 17], atol=0.01)


@pytest.mark.parametrize("weights", [None, [1.0] * 5, [3.0] * 5])
def test_equal_weights_draw_exactly_as_uniform_integers(weights):
    draw = CaseDraw(5, weights)
    ours, reference = np.random.default_rng(7), np.random.default_rng(7)
    assert [draw(ours) for _ in range(200)] == [int(reference.integers(5)) for _ in range(200)]


def test_bad_weights_are_refused():
    with pytest.raises(ValueError, match="one weight per case"):
        CaseDraw(3, [1.0, 2.0])
    with pytest.raises(ValueError, match="finite and > 0"):
        CaseDraw(2, [1.0, 0.0])


def test_a_task_with_weights_draws_its_cases_by_them(tmp_path):
    paths = []
    for k in range(2):
        path = tmp_path / f"c{k}.npy"
        np.save(path, np.full((20, 20, 20), k, np.float32))
        paths.append(ImageCase(f"c{k}", path))
    config = MimConfig.from_config({"channels": [4, 8]}, {"crop_size": [16, 16, 16]})
    task = MimTask(paths, config, weights=[9.0, 1.0])
    means = [float(task.sample(0, step, 0)["image"].mean()) for step in range(300)]
    share = np.mean(np.isclose(means, 0.0))
    assert 0.83 < share < 0.97  # 0.9 expected; binomial sd 0.017
    # The draw uses the sample's own stream, so a sample is the same whoever asks for it.
    assert np.array_equal(task.sample(0, 5, 1)["image"], task.sample(0, 5, 1)["image"])
    assert task_rng(0, 5, 1).integers(10) == task_rng(0, 5, 1).integers(10)
