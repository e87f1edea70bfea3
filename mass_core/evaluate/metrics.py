"""Segmentation metrics per class and case: Dice and HD95 in mm, computed by MONAI.

Both come from MONAI's functional metrics (:func:`monai.metrics.compute_dice`,
:func:`monai.metrics.compute_hausdorff_distance` with ``percentile=95`` and
the voxel ``spacing``), so that numbers are comparable with other MONAI-based
work. HD95 is symmetric: the larger of the two directed 95th percentiles of
surface distances, in mm (MONAI's ``directed=False``).

Empty masks (the conventions of the paper's protocol, "Dice is averaged over
test volumes that contain the class"):

============== ============== ================= ====================================
truth          prediction     Dice              HD95
============== ============== ================= ====================================
present        present        MONAI             MONAI
present        empty          0                 the grid's diagonal in mm (worst case)
empty          anything       NaN (not counted) NaN (not counted)
============== ============== ================= ====================================

A missed structure therefore counts as the worst possible HD95 instead of
silently dropping out of the mean; false positives on a volume without the
class do not enter Dice or HD95 but stay visible in ``pred_voxels``.

Ignored voxels (the dataset's ``ignore_label``, :data:`~mass_core.labels.IGNORE_LABEL`
in a standardized label map) are removed from prediction and truth before
anything is counted: what a model predicts there changes no number.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from mass_core.labels import ignored

__all__ = ["METRIC_COLUMNS", "grid_diagonal_mm", "label_map_metrics", "mask_metrics"]

METRIC_COLUMNS = ["class_id", "dice", "hd95_mm", "truth_voxels", "pred_voxels"]


def grid_diagonal_mm(shape: Sequence[int], spacing_mm: Sequence[float]) -> float:
    """Largest distance between two voxel centres of a grid, in mm (HD95 of a missed structure).

    Example:
        >>> grid_diagonal_mm((2, 3, 1), (1.0, 2.0, 5.0))  # sqrt(1**2 + 4**2)
        4.123105625617661
    """
    return float(math.sqrt(sum(((n - 1) * s) ** 2 for n, s in zip(shape, spacing_mm))))



def _check_spacing(spacing_mm: Sequence[float]) -> tuple[float, float, float]:
    spacing = tuple(float(s) for s in spacing_mm)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing_mm must be three positive numbers (mm), got {spacing_mm!r}")
    return spacing  # type: ignore[return-value]


def mask_metrics(pred: np.ndarray, truth: np.ndarray, class_ids: Sequence[int], spacing_mm: Sequence[float],
                 hd95: bool = True, ignore: np.ndarray | None = None) -> pd.DataFrame:
    """Dice and HD95 of K binary masks against K binary truths (one row per mask).

    Args:
        pred: bool ``(K, X, Y, Z)`` predicted masks (the in-context setting, where
            masks of different classes may overlap).
        truth: bool ``(K, X, Y, Z)`` ground-truth masks on the same grid.
        class_ids: the K class ids written into the ``class_id`` column.
        spacing_mm: voxel spacing ``(X, Y, Z)`` in mm.
        hd95: ``False`` skips the (slower) surface distances; ``hd95_mm`` is then NaN.
        ignore: bool ``(X, Y, Z)`` voxels left out of every metric (unlabeled in the truth).

    Returns:
        columns :data:`METRIC_COLUMNS`; ``dice`` in [0, 1], ``hd95_mm`` in mm,
        with the empty-mask conventions of the module docstring; voxel counts
        leave ``ignore`` out.

    Example:
        Two 4x4x4 cubes, one shifted by a voxel along X, spacing (2, 0.5, 0.7) mm:
        Dice = 2 * 48 / 128 = 0.75 and HD95 = 2.0 mm (one voxel along X).
    """
    spacing = _check_spacing(spacing_mm)
    pred = np.asarray(pred).astype(bool)
    truth = np.asarray(truth).astype(bool)
    if pred.ndim != 4 or pred.shape != truth.shape:
        raise ValueError(f"pred and truth must both be (K, X, Y, Z) of one shape, got {pred.shape} and {truth.shape}")
    if len(class_ids) != pred.shape[0]:
        raise ValueError(f"class_ids has {len(class_ids)} entries for {pred.shape[0]} masks")
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        if ignore.shape != pred.shape[1:]:
            raise ValueError(f"ignore must be (X, Y, Z) {pred.shape[1:]}, got {ignore.shape}")
        pred, truth = pred & ~ignore, truth & ~ignore
    pred_t = torch.from_numpy(pred[None]).float()
    truth_t = torch.from_numpy(truth[None]).float()
    # ignore_empty=True gives NaN for an empty truth: the class is not counted.
    dice = compute_dice(pred_t, truth_t, include_background=True, ignore_empty=True)[0].numpy()
    worst = grid_diagonal_mm(pred.shape[1:], spacing)
    rows = []
    for k, class_id in enumerate(class_ids):
        truth_voxels, pred_voxels = int(truth[k].sum()), int(pred[k].sum())
        if truth_voxels == 0 or not hd95:
            distance = math.nan
        elif pred_voxels == 0:
            distance = worst
        else:
            with warnings.catch_warnings():
                # MONAI 1.5+ warns about an argument its own code passes internally.
                warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
                distance = float(compute_hausdorff_distance(pred_t[:, k:k + 1], truth_t[:, k:k + 1], include_background=True,
                                                        percentile=95, directed=False, spacing=list(spacing))[0, 0])
        rows.append({"class_id": int(class_id), "dice": float(dice[k]), "hd95_mm": distance,
                     "truth_voxels": truth_voxels, "pred_voxels": pred_voxels})
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def label_map_metrics(pred: np.ndarray, truth: np.ndarray, class_ids: Sequence[int], spacing_mm: Sequence[float],
                      hd95: bool = True) -> pd.DataFrame:
    """Dice and HD95 per class of two label maps (the finetuning setting).

    Args:
        pred: integer ``(X, Y, Z)`` predicted class ids.
        truth: integer ``(X, Y, Z)`` ground truth on the same grid; its ignored
            voxels (:func:`~mass_core.labels.ignored`) are left out.
        class_ids: foreground classes to score (background 0 is never scored).
        spacing_mm: voxel spacing ``(X, Y, Z)`` in mm.
        hd95: ``False`` skips the surface distances (``hd95_mm`` is NaN).

    Returns:
        one row per class, see :func:`mask_metrics`.
    """
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    if pred.ndim != 3 or pred.shape != truth.shape:
        raise ValueError(f"pred and truth must both be (X, Y, Z) of one shape, got {pred.shape} and {truth.shape}")
    ids = np.asarray(list(class_ids)).reshape(-1, 1, 1, 1)
    return mask_metrics(pred[None] == ids, truth[None] == ids, class_ids, spacing_mm, hd95, ignore=ignored(truth))
