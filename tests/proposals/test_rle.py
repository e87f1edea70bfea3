from __future__ import annotations

import numpy as np
import pytest

from mass_core.proposals import rle


def _label_map(shape=(9, 7, 11), seed=0):
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 6, size=tuple(-(-n // 3) for n in shape))
    return np.kron(coarse, np.ones((3, 3, 3), int))[: shape[0], : shape[1], : shape[2]].astype(np.uint16)


BOXES = [(0, 9, 0, 7, 0, 11), (2, 5, 1, 7, 3, 4), (8, 9, 6, 7, 10, 11), (0, 1, 3, 5, 0, 11)]


@pytest.mark.parametrize("box", BOXES)
def test_decode_count_and_paint_match_slicing(box):
    labels = _label_map()
    code = rle.encode(labels)
    expected = labels[box[0] : box[1], box[2] : box[3], box[4] : box[5]]
    whole = rle.ColumnSlice.whole(code)
    np.testing.assert_array_equal(rle.decode_box(whole, box, np.empty(expected.shape, labels.dtype)), expected)
    counts = np.zeros(10, np.int64)
    rle.count_box(whole, box, counts, offset=2)
    np.testing.assert_array_equal(counts[2:8], np.bincount(expected.ravel(), minlength=6))
    slot = np.full(6, -1, np.int64)
    slot[[1, 4]] = [1, 0]
    masks = np.zeros((2,) + expected.shape, bool)
    rle.paint_box(whole, box, slot, masks)
    np.testing.assert_array_equal(masks[0], expected == 4)
    np.testing.assert_array_equal(masks[1], expected == 1)


def test_decode_from_a_slice_of_the_columns():
    labels = _label_map()
    code = rle.encode(labels)
    box = (3, 6, 2, 5, 1, 9)
    ny = labels.shape[1]
    col_lo, col_hi = box[0] * ny + box[2], (box[1] - 1) * ny + box[3]
    run_lo, run_hi = code.col_start[col_lo], code.col_start[col_hi]
    part = rle.ColumnSlice(
        code.col_start[col_lo : col_hi + 1],
        code.run_end[run_lo:run_hi],
        code.run_value[run_lo:run_hi],
        ny,
        col_lo,
        run_lo,
    )
    out = rle.decode_box(part, box, np.empty((3, 3, 8), labels.dtype))
    np.testing.assert_array_equal(out, labels[3:6, 2:5, 1:9])


def test_encode_is_compact_and_rejects_bad_input():
    labels = np.repeat(_label_map((30, 30, 4)), 8, axis=2)  # runs of 8 or more along Z
    code = rle.encode(labels)
    assert code.run_end.nbytes + code.run_value.nbytes < labels.nbytes / 3
    with pytest.raises(ValueError, match="labels"):
        rle.encode(labels.astype(np.int32))
    with pytest.raises(ValueError, match="box"):
        rle.decode_box(rle.ColumnSlice.whole(code), (0, 0, 0, 1, 0, 1), np.empty((0, 1, 1), labels.dtype))
