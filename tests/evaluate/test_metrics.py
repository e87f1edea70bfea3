from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from mass_core.evaluate.metrics import METRIC_COLUMNS, grid_diagonal_mm, label_map_metrics, mask_metrics
from mass_core.labels import IGNORE_LABEL

SPACING = (2.0, 0.5, 0.7)


def cubes(shape, gt_box, pred_box):
    gt, pred = np.zeros(shape, bool), np.zeros(shape, bool)
    gt[tuple(slice(*b) for b in gt_box)] = True
    pred[tuple(slice(*b) for b in pred_box)] = True
    return pred, gt


def test_offset_cubes_by_hand():
    # 4^3 cubes, the prediction shifted by one voxel along X (2 mm): overlap 3*4*4 = 48 voxels.
    # Surface voxels off the other surface lie exactly one X step (2 mm) away (>= 16 of 56 per
    # direction, the top of the sorted distances), so both directed 95th percentiles are 2 mm.
    pred, gt = cubes((10, 10, 10), [(0, 4)] * 3, [(1, 5), (0, 4), (0, 4)])
    row = mask_metrics(pred[None], gt[None], [1], SPACING).iloc[0]
    assert row["dice"] == pytest.approx(2 * 48 / 128)
    assert row["hd95_mm"] == pytest.approx(2.0)
    assert (row["truth_voxels"], row["pred_voxels"]) == (64, 64)


def test_disjoint_cubes_by_hand():
    # 2^3 cubes (every voxel on the surface) 4 voxels apart along Z: distances are 4 or 5 Z steps,
    # half each, so the 95th percentile is 5 * 0.7 mm = 3.5 mm in both directions.
    pred, gt = cubes((6, 6, 10), [(0, 2), (0, 2), (0, 2)], [(0, 2), (0, 2), (5, 7)])
    row = mask_metrics(pred[None], gt[None], [3], SPACING).iloc[0]
    assert row["dice"] == 0.0
    assert row["hd95_mm"] == pytest.approx(3.5)
    assert row["class_id"] == 3


def test_label_maps_match_monai():
    rng = np.random.default_rng(0)
    truth = np.zeros((20, 18, 16), np.uint8)
    truth[3:12, 4:14, 2:10] = 1
    truth[12:18, 2:9, 8:15] = 2
    pred = truth.copy()
    pred[rng.random(truth.shape) < 0.05] = 0
    pred[2:6, 2:6, 1:4] = 2
    table = label_map_metrics(pred, truth, [1, 2], SPACING)
    assert list(table.columns) == METRIC_COLUMNS
    onehot = lambda a: torch.from_numpy(np.stack([a == 1, a == 2])[None]).float()  # noqa: E731
    dice = compute_dice(onehot(pred), onehot(truth), include_background=True)[0]
    hd95 = compute_hausdorff_distance(onehot(pred), onehot(truth), include_background=True, percentile=95, spacing=list(SPACING))[0]
    np.testing.assert_allclose(table["dice"], dice.numpy(), rtol=1e-6)
    np.testing.assert_allclose(table["hd95_mm"], hd95.numpy(), rtol=1e-6)
    assert 0 < table["dice"].min() < 1


def test_empty_mask_conventions():
    truth = np.zeros((8, 8, 8), np.uint8)
    truth[2:5, 2:5, 2:5] = 1
    pred = np.zeros_like(truth)
    pred[1:3, 1:3, 1:3] = 2  # a false positive of a class absent from the truth
    table = label_map_metrics(pred, truth, [1, 2], SPACING).set_index("class_id")
    assert table.loc[1, "dice"] == 0.0
    assert table.loc[1, "hd95_mm"] == pytest.approx(grid_diagonal_mm((8, 8, 8), SPACING))
    assert math.isnan(table.loc[2, "dice"]) and math.isnan(table.loc[2, "hd95_mm"])
    assert table.loc[2, "pred_voxels"] == 8 and table.loc[2, "truth_voxels"] == 0


def test_hd95_can_be_skipped():
    pred, gt = cubes((10, 10, 10), [(0, 4)] * 3, [(1, 5), (0, 4), (0, 4)])
    row = mask_metrics(pred[None], gt[None], [1], SPACING, hd95=False).iloc[0]
    assert row["dice"] == pytest.approx(0.75) and math.isnan(row["hd95_mm"])


def test_predictions_inside_ignored_voxels_change_nothing():
    # The offset cubes of test_offset_cubes_by_hand (Dice 0.75, HD95 2 mm), plus a 4^3 block of
    # ignored voxels that the prediction also fills. Counted, it would give Dice 2 * 48 / (64 + 128)
    # = 0.5 and a far larger HD95; left out, the numbers of the cubes alone remain.
    pred_mask, truth_mask = cubes((10, 10, 10), [(0, 4)] * 3, [(1, 5), (0, 4), (0, 4)])
    truth = truth_mask.astype(np.uint16)
    truth[6:10, 6:10, 6:10] = IGNORE_LABEL
    pred = pred_mask.astype(np.uint8)
    pred[6:10, 6:10, 6:10] = 1
    row = label_map_metrics(pred, truth, [1], SPACING).iloc[0]
    assert row["dice"] == pytest.approx(0.75) and row["hd95_mm"] == pytest.approx(2.0)
    assert (row["truth_voxels"], row["pred_voxels"]) == (64, 64)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"pred": np.zeros((1, 4, 4, 4)), "truth": np.zeros((1, 4, 4, 5))}, "one shape"),
        ({"class_ids": [1, 2]}, "class_ids"),
        ({"spacing_mm": (1.0, 0.0, 1.0)}, "spacing_mm"),
    ],
)
def test_bad_arguments(kwargs, message):
    args = {"pred": np.zeros((1, 4, 4, 4)), "truth": np.zeros((1, 4, 4, 4)), "class_ids": [1], "spacing_mm": (1.0, 1.0, 1.0)} | kwargs
    with pytest.raises(ValueError, match=message):
        mask_metrics(**args)
