"""Proposal recall: how well the best single proposal covers each ground-truth structure.

For every structure (a class present in a labeled case) the best Dice of
any one proposal, at any scale; summarised per class and overall as the mean
best Dice and the fraction of structures whose best Dice reaches 0.5 and
0.7. This is the number by which generators and their parameters are
compared. Ignored voxels (the dataset's ``ignore_label``) belong to no
structure and are left out of every proposal, so they change no Dice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from mass_core.atomic import atomic_path
from mass_core.config_section import from_section
from mass_core.labels import foreground_classes, ignored
from mass_core.proposals.store import ProposalStore, ids_by_scale

__all__ = ["RECALL_THRESHOLDS", "STRUCTURES", "RecallParams", "best_dice", "recall_table", "summarize_recall"]

RECALL_THRESHOLDS = (0.5, 0.7)
STRUCTURES = ("class", "component")
_COLUMNS = ["case_id", "class_id", "component", "voxels", "volume_mm3", "best_dice", "best_proposal_id"]


@dataclass(frozen=True)
class RecallParams:
    """How proposal recall counts ground-truth structures (config key ``proposals.recall``).

    Args:
        structures: ``"class"`` (each class present is one structure) or
            ``"component"`` (each 26-connected component of a class, e.g. one
            vertebra of a spine label).
        min_structure_mm3: smaller structures are left out (for components:
            resampling specks).
    """

    structures: str = "class"
    min_structure_mm3: float = 0.0

    def __post_init__(self) -> None:
        if self.structures not in STRUCTURES:
            raise ValueError(f"structures must be one of {STRUCTURES}, got {self.structures!r}")
        if self.min_structure_mm3 < 0:
            raise ValueError(f"min_structure_mm3 must be >= 0, got {self.min_structure_mm3}")

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> RecallParams:
        """Build from the config's ``proposals.recall`` section (unknown keys are an error)."""
        return from_section(cls, section, "proposals.recall")


def _structures(label: np.ndarray, structures: str, min_voxels: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    # A map with one positive id per structure, and (class_id, component) of each id.
    if structures == "class":
        return label, [(c, 0) for c in range(1, int(label.max(initial=0)) + 1)]
    out = np.zeros(label.shape, np.int64)
    info: list[tuple[int, int]] = []
    for c in foreground_classes(label):
        components, n = ndimage.label(label == c, structure=np.ones((3, 3, 3)))
        sizes = np.bincount(components.ravel(), minlength=n + 1)
        for k in range(1, n + 1):
            if sizes[k] >= min_voxels:
                info.append((c, k))
                out[components == k] = len(info)
    return out, info


def best_dice(
    label: np.ndarray,
    label_maps: np.ndarray,
    proposal_ids: Sequence[np.ndarray],
    spacing: Sequence[float],
    case_id: str,
    *,
    structures: str = "class",
    min_structure_mm3: float = 0.0,
) -> pd.DataFrame:
    """Best Dice of any single proposal for every ground-truth structure of ``label``.

    Args:
        label: int (X, Y, Z) standardized ground truth, 0 = background; ignored voxels are left out.
        label_maps: int (S, X, Y, Z) proposals, labels ``1..n_s`` per scale.
        proposal_ids: per scale, int64 (n_s,) ids of labels ``1..n_s``.
        spacing: voxel spacing (X, Y, Z) in mm.
        case_id: written into the rows.
        structures: ``"class"`` (each class present is one structure) or
            ``"component"`` (each 26-connected component of a class, e.g. one
            vertebra of a spine label).
        min_structure_mm3: smaller structures are left out (for components:
            resampling specks).

    Returns:
        one row per structure: ``case_id``, ``class_id``, ``component`` (0 for
        whole classes), ``voxels``, ``volume_mm3``, ``best_dice``,
        ``best_proposal_id`` (-1 when no proposal touches it).
    """
    if label.shape != label_maps.shape[1:]:
        raise ValueError(f"label {label.shape} and label_maps {label_maps.shape[1:]} must share a grid ({case_id!r})")
    if structures not in STRUCTURES:
        raise ValueError(f"structures must be one of {STRUCTURES}, got {structures!r}")
    voxel_mm3 = float(np.prod(spacing))
    unlabeled = ignored(label)
    structure_map, info = _structures(np.where(unlabeled, 0, label), structures, int(np.ceil(min_structure_mm3 / voxel_mm3)))
    sizes = [np.bincount(m[~unlabeled], minlength=len(ids) + 1) for m, ids in zip(label_maps, proposal_ids)]
    flat = structure_map.ravel()
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(len(info) + 2))
    rows = []
    for k, (class_id, component) in enumerate(info, start=1):
        where = order[bounds[k] : bounds[k + 1]]
        if where.size == 0 or where.size * voxel_mm3 < min_structure_mm3:
            continue
        best, best_id = 0.0, -1
        for m, ids, size in zip(label_maps, proposal_ids, sizes):
            inter = np.bincount(m.ravel()[where], minlength=size.size)
            inter[0] = 0
            dice = 2 * inter / (where.size + size)
            j = int(dice.argmax())
            if dice[j] > best:
                best, best_id = float(dice[j]), int(ids[j - 1])
        rows.append((case_id, class_id, component, where.size, where.size * voxel_mm3, best, best_id))
    return pd.DataFrame(rows, columns=_COLUMNS)


def summarize_recall(per_structure: pd.DataFrame, thresholds: Sequence[float] = RECALL_THRESHOLDS) -> pd.DataFrame:
    """Per class and overall: ``n_structures``, ``mean_best_dice``, ``recall_dice<t*100>``.

    Rows have ``scope`` ``"class"`` (with its ``class_id``) or ``"overall"``
    (``class_id`` -1, every structure counted once).
    """

    def summary(frame: pd.DataFrame) -> dict[str, float]:
        row = {"n_structures": len(frame), "mean_best_dice": frame["best_dice"].mean()}
        for t in thresholds:
            row[f"recall_dice{round(t * 100)}"] = (frame["best_dice"] >= t).mean()
        return row

    rows = [{"scope": "class", "class_id": int(c), **summary(g)} for c, g in per_structure.groupby("class_id")]
    rows.append({"scope": "overall", "class_id": -1, **summary(per_structure)})
    return pd.DataFrame(rows)


def recall_table(
    dataset_dir: str | os.PathLike,
    case_ids: Sequence[str],
    out_path: str | os.PathLike,
    per_structure_path: str | os.PathLike | None = None,
    params: RecallParams = RecallParams(),
) -> pd.DataFrame:
    """Proposal recall of a dataset, written as parquet.

    Cases without ``label.npy`` (unlabeled) or without proposals (skipped)
    are left out; a dataset with no labeled case gives a table with only the
    overall row and ``n_structures`` 0.

    Args:
        dataset_dir: the dataset's results folder, holding ``standardized/<case>``
            (``label.npy``) and ``proposals/<case>`` (the store) of every case.
        case_ids: the cases.
        out_path: the summary (:func:`summarize_recall`) as parquet.
        per_structure_path: optionally the per-structure rows (:func:`best_dice`).
        params: how structures are counted.

    Returns:
        the summary table.
    """
    dataset_dir = Path(dataset_dir)
    frames = []
    for case_id in case_ids:
        label_path = dataset_dir / "standardized" / case_id / "label.npy"
        prop_dir = dataset_dir / "proposals" / case_id
        if not label_path.is_file() or not (prop_dir / "proposals.h5").is_file():
            continue
        store = ProposalStore(prop_dir)
        ids = ids_by_scale(store.table, store.n_scales)
        frames.append(best_dice(
                np.load(label_path),
                store.label_maps(),
                ids,
                store.spacing,
                case_id,
                structures=params.structures,
                min_structure_mm3=params.min_structure_mm3,
            )
        )
        store.close()
    per_structure = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=_COLUMNS)
    per_structure = per_structure.astype({"best_dice": float, "class_id": np.int64})
    summary = summarize_recall(per_structure)
    with atomic_path(out_path) as tmp:
        summary.to_parquet(tmp, index=False)
    if per_structure_path is not None:
        with atomic_path(per_structure_path) as tmp:
            per_structure.to_parquet(tmp, index=False)
    return summary
