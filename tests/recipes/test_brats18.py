"""BraTS 2018 recipes on a mimic of the training release: one crop box per subject, labels 1/2/4 as 1/2/3."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk

import mimic_brats18
from mass_core.datasets import SkippedCase, class_names, list_cases, list_dataset
from mass_core.standardize import StandardizeParams, run_standardize, standardize_case

PARAMS = StandardizeParams(spacing_mm=(1.0, 1.0, 1.0), margin_mm=0.0)
DATASETS = ("brats18_flair", "brats18_t1", "brats18_t2")
MIMIC = mimic_brats18
RELEASE_FOLDER = "MICCAI_BraTS_2018_Data_Training"


def _cases(root, dataset):
    return list_cases({"recipe": dataset, "root": str(root)})


def _union_box_ras(folder) -> list[list[int]]:
    """Box of the voxels nonzero in FLAIR, T1 or T2, on the RAS grid (the mimic's x and y axes reversed)."""
    union = sum(sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"{folder.name}_{m}.nii.gz"))) != 0
                for m in ("flair", "t1", "t2"))
    ras = union.transpose(2, 1, 0)[::-1, ::-1, :] > 0  # (Z, Y, X) -> (X, Y, Z), then flip x and y
    box = []
    for axis in range(3):
        present = np.flatnonzero(ras.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append([int(present[0]), int(present[-1]) + 1])
    return box


def test_three_modality_datasets_share_subjects_and_crop_boxes(release, tmp_path):
    subjects = sorted(s for names in mimic_brats18.SUBJECTS.values() for s in names)
    boxes: dict[str, list] = {}
    for dataset in DATASETS:
        cases = _cases(release, dataset)
        assert [c.case_id for c in cases] == subjects and [c.subject for c in cases] == subjects
        for case in cases:
            assert case.image.name == f"{case.case_id}_{dataset.split('_')[1]}.nii.gz" and len(case.crop_with) == 2
            meta = standardize_case(case, tmp_path / dataset / case.case_id, PARAMS)
            boxes.setdefault(case.case_id, []).append(meta["crop_box"])
            assert meta["subject"] == case.case_id and meta["label_classes"] == [1, 2, 3]
    for subject, found in boxes.items():
        folder = next(release.glob(f"*/{subject}"))
        assert found == [_union_box_ras(folder)] * 3
    # Without the shared crop, each modality's own foreground gives another box.
    alone = [standardize_case(dataclasses.replace(case, crop_with=()), tmp_path / "alone" / dataset, PARAMS)["crop_box"]
             for dataset in DATASETS for case in _cases(release, dataset)[:1]]
    assert len({str(box) for box in alone}) == 3


def test_labels_1_2_4_become_classes_1_2_3(release, tmp_path):
    case = _cases(release, "brats18_t1")[0]
    standardize_case(case, tmp_path / "out", PARAMS)
    label = np.load(tmp_path / "out" / "label.npy")
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))
    assert [int(np.count_nonzero(label == c)) for c in (1, 2, 3)] == [int(np.count_nonzero(seg == v)) for v in (1, 2, 4)]
    assert set(np.unique(label).tolist()) == {0, 1, 2, 3}
    assert class_names({"recipe": "brats18_t1", "root": str(release)}) == {
        1: "necrotic and non-enhancing core", 2: "edema", 3: "enhancing tumor"}


def test_a_missing_modality_drops_its_case_and_leaves_the_crop(tmp_path):
    root = tmp_path / RELEASE_FOLDER
    mimic_brats18.write(root)
    (root / "LGG" / "Brats18_2013_0_1" / "Brats18_2013_0_1_t2.nii.gz").unlink()
    assert "Brats18_2013_0_1" not in [c.case_id for c in _cases(root, "brats18_t2")]
    assert list_dataset({"recipe": "brats18_t2", "root": str(root)}).skipped == [
        SkippedCase("Brats18_2013_0_1", "no LGG/Brats18_2013_0_1/Brats18_2013_0_1_t2.nii.gz")]
    flair = next(c for c in _cases(root, "brats18_flair") if c.case_id == "Brats18_2013_0_1")
    assert [p.name for p in flair.crop_with] == ["Brats18_2013_0_1_t1.nii.gz"]
    assert run_standardize(flair, tmp_path / "flair", PARAMS, on_error="fail")["status"] == "ok"
