"""Standardized cases of a dataset manifest, as the evaluation jobs read them."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mass_core.manifest import read_manifest

__all__ = ["EvalCase", "dataset_classes", "load_split"]


@dataclass(frozen=True)
class EvalCase:
    """One standardized case.

    Attributes:
        case_id: the manifest's case id.
        image: float32 ``(X, Y, Z)`` image, memory-mapped.
        label: integer ``(X, Y, Z)`` label map, memory-mapped, or ``None`` (unlabeled case).
        spacing_mm: voxel spacing ``(X, Y, Z)`` in mm.
        class_label: classification label, -1 when unknown.
        label_classes: foreground class ids present in ``label``.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    spacing_mm: tuple[float, float, float]
    class_label: int
    label_classes: tuple[int, ...]


def _case(row: pd.Series) -> EvalCase:
    # Manifest paths are relative to the working directory of the run (the
    # repository root under Snakemake), like every other path of the pipeline.
    label = np.load(row["label"], mmap_mode="r") if row["label"] else None
    return EvalCase(
        case_id=str(row["case_id"]),
        image=np.load(row["image"], mmap_mode="r"),
        label=label,
        spacing_mm=(float(row["spacing_x"]), float(row["spacing_y"]), float(row["spacing_z"])),
        class_label=int(row["class_label"]),
        label_classes=tuple(int(c) for c in row["label_classes"]),
    )


def load_split(manifest_path: str | os.PathLike, split: str, require_labels: bool) -> list[EvalCase]:
    """Cases of one split, sorted by case id.

    Args:
        manifest_path: a dataset's ``manifest.parquet``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        require_labels: raise if a case has no ``label.npy`` (segmentation jobs).

    Raises:
        ValueError: a case lacks its label map while ``require_labels`` is set.
    """
    manifest = read_manifest(manifest_path, split).sort_values("case_id", kind="stable")
    cases = [_case(row) for _, row in manifest.iterrows()]
    missing = [c.case_id for c in cases if c.label is None]
    if require_labels and missing:
        raise ValueError(f"{manifest_path}: {split} cases without label maps cannot be used for segmentation: {missing[:5]}")
    return cases


def dataset_classes(manifest_path: str | os.PathLike) -> list[int]:
    """Foreground class ids of a dataset: the union of every case's ``label_classes``, sorted.

    The label vocabulary is dataset metadata (like nnU-Net's ``dataset.json``
    labels), so it is taken from every split; no image or label voxel of the
    test split is read.
    """
    manifest = read_manifest(manifest_path)
    classes = sorted({int(c) for row in manifest["label_classes"] for c in row})
    if not classes:
        raise ValueError(f"{manifest_path}: no case has a foreground label; nothing to segment")
    return classes
