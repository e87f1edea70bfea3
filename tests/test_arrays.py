"""Tests of the shared array operations: padded crops and the largest connected component."""

from __future__ import annotations

import numpy as np
import pytest

from mass_core.arrays import crop_padded, largest_component


@pytest.mark.parametrize("seed", range(20))
def test_crop_padded_equals_a_slice_of_the_whole_padded_array(seed: int) -> None:
    rng = np.random.default_rng(seed)
    array = rng.normal(size=(2, *rng.integers(3, 12, 3))).astype(np.float32)
    size = rng.integers(1, 16, 3)
    # Start anywhere the box still overlaps the array.
    start = [int(rng.integers(1 - n, dim)) for n, dim in zip(size, array.shape[1:])]
    margin = 16
    padded = np.pad(array, [(0, 0)] + [(margin, margin)] * 3, constant_values=-7.0)
    expected = padded[(slice(None),) + tuple(slice(s + margin, s + margin + n) for s, n in zip(start, size))]
    crop = crop_padded(array, start, size, -7.0)
    assert crop.dtype == array.dtype
    np.testing.assert_array_equal(crop, expected)


def test_crop_padded_copies_and_reports_a_box_outside_the_array() -> None:
    array = np.arange(64, dtype=np.int16).reshape(4, 4, 4)
    crop = crop_padded(array, (0, 0, 0), (4, 4, 4))
    crop[0, 0, 0] = 99
    assert array[0, 0, 0] == 0
    assert crop_padded(array, (4, 0, 0), (2, 2, 2)) is None
    assert crop_padded(array, (0, -2, 0), (2, 2, 2)) is None


def test_largest_component_is_6_connected_and_keeps_the_first_of_equal_sizes() -> None:
    mask = np.zeros((8, 8, 8), bool)
    mask[0:2, 0:2, 0:2] = True  # 8 voxels, first in C order
    mask[5:7, 5:7, 5:7] = True  # 8 voxels
    mask[2, 2, 2] = True  # touches the first cube only diagonally: a component of its own
    kept = largest_component(mask)
    assert kept.sum() == 8 and kept[0:2, 0:2, 0:2].all() and not kept[2, 2, 2]
    mask[4, 5, 5] = mask[4, 5, 6] = True  # the second cube grows to 10 voxels
    kept = largest_component(mask)
    assert kept.sum() == 10 and kept[5:7, 5:7, 5:7].all() and not kept[0, 0, 0]
    assert not largest_component(np.zeros((3, 3, 3), bool)).any()
