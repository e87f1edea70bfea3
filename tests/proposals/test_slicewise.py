from __future__ import annotations

import numpy as np
import pytest

from mass_core.proposals.slicewise import segment_slices


def test_constant_columns_link_into_3d_segments():
    # Linking looks at footprints only, so blocks stacked along the slicing
    # axis with equal footprints would link: the blocks here span all slices.
    truth = np.kron(np.arange(6).reshape(3, 2, 1), np.ones((5, 6, 7), int))
    image = (truth * 1.3).astype(np.float32)
    labels = segment_slices(image, (1.0, 1.0, 1.0), 0.5, sigma_mm=0.0)
    assert labels.dtype == np.int32 and labels.min() == 1
    pairs = np.unique(np.stack([labels.ravel(), truth.ravel()]), axis=1)
    assert pairs.shape[1] == 6 == labels.max()  # one segment per block, one block per segment


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_any_slicing_axis(axis):
    truth = np.zeros((10, 12, 14), int)
    truth[2:7, 3:9, 4:11] = 1
    labels = segment_slices(truth.astype(np.float32) * 5, (1.0, 1.0, 1.0), 0.5, sigma_mm=0.0, axis=axis)
    assert np.unique(labels[truth == 1]).size == 1 and np.unique(labels[truth == 0]).size == 1


def test_overlap_linking_chains_what_iou_keeps_apart():
    # A small square in the middle slice lies inside large regions of its
    # neighbours: "overlap > 50% of the smaller" links it, IoU does not.
    image = np.zeros((20, 20, 3), np.float32)
    image[8:12, 8:12, 1] = 10.0
    iou = segment_slices(image, (1.0, 1.0, 1.0), 0.5, sigma_mm=0.0, link="iou")
    overlap = segment_slices(image, (1.0, 1.0, 1.0), 0.5, sigma_mm=0.0, link="overlap")
    assert iou[10, 10, 1] != iou[0, 0, 0]
    assert overlap.max() == 1


def test_foreground_and_bad_arguments():
    image = np.random.default_rng(0).normal(size=(8, 8, 4)).astype(np.float32)
    foreground = np.zeros(image.shape, bool)
    foreground[2:6, 2:6] = True
    labels = segment_slices(image, (1.0, 1.0, 1.0), 1.0, foreground=foreground)
    assert (labels[~foreground] == 0).all() and (labels[foreground] > 0).all()
    with pytest.raises(ValueError, match="link"):
        segment_slices(image, (1.0, 1.0, 1.0), 1.0, link="chain")
    with pytest.raises(ValueError, match="axis"):
        segment_slices(image, (1.0, 1.0, 1.0), 1.0, axis=3)
    with pytest.raises(ValueError, match="link_threshold"):
        segment_slices(image, (1.0, 1.0, 1.0), 1.0, link_threshold=0.0)
