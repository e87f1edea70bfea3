from __future__ import annotations

import numpy as np
import pytest

from mass_core.proposals.labels import label_dtype, pair_counts, region_stats


def test_region_stats_counts_and_boxes():
    labels = np.zeros((6, 5, 4), np.uint16)
    labels[1:3, 2:5, 0:1] = 1
    labels[5, 0, 3] = 3
    stats = region_stats(labels)
    np.testing.assert_array_equal(stats.voxels, np.bincount(labels.ravel(), minlength=4))
    np.testing.assert_array_equal(stats.bbox[1], [1, 3, 2, 5, 0, 1])
    np.testing.assert_array_equal(stats.bbox[2], [0] * 6)  # absent label
    np.testing.assert_array_equal(stats.bbox[3], [5, 6, 0, 1, 3, 4])


def test_region_stats_match_numpy_on_runs_and_single_voxels():
    rng = np.random.default_rng(2)
    # Runs along Z of random length, with single voxels between them.
    labels = np.repeat(rng.integers(0, 6, size=(9, 8, 12)), rng.integers(1, 4, size=12), axis=2)[:, :, :20]
    labels[rng.random(labels.shape) < 0.1] = 7
    stats = region_stats(labels.astype(np.uint8))
    np.testing.assert_array_equal(stats.voxels, np.bincount(labels.ravel(), minlength=8))
    for v in range(8):
        where = np.nonzero(labels == v)
        expected = [b for axis in where for b in (axis.min(), axis.max() + 1)] if where[0].size else [0] * 6
        np.testing.assert_array_equal(stats.bbox[v], expected, err_msg=f"label {v}")


@pytest.mark.parametrize("shape", [(7, 6, 5), (40, 30)])
def test_pair_counts_matches_unique(shape):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 4, size=shape).astype(np.uint8)
    b = np.repeat(rng.integers(0, 6, size=shape[:-1] + (1,)), shape[-1], axis=-1).astype(np.int32)
    got = pair_counts(a, b)
    both = (a > 0) & (b > 0)
    pairs, counts = np.unique(np.stack([a[both], b[both]]), axis=1, return_counts=True)
    np.testing.assert_array_equal(got.a, pairs[0])
    np.testing.assert_array_equal(got.b, pairs[1])
    np.testing.assert_array_equal(got.count, counts)


def test_label_dtype_and_bad_input():
    assert label_dtype(255) == np.uint8
    assert label_dtype(256) == np.uint16
    assert label_dtype(70000) == np.uint32
    with pytest.raises(ValueError, match="labels"):
        region_stats(np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match="same shape"):
        pair_counts(np.zeros((3, 3), np.uint8), np.zeros((3, 4), np.uint8))
