"""LiTS recipe on a mimic of the release: batch folders are searched, volumes 28 and 34 get the fixed spacing."""

from __future__ import annotations

import numpy as np

import mimic_lits
from mass_core.datasets import class_names, list_cases
from mass_core.raw_case import read_case
from mass_core.recipes.lits import FIXED_SPACING
from mass_core.standardize import StandardizeParams, standardize_case

MIMIC = mimic_lits
RELEASE_FOLDER = "LiTS"


def test_lits_finds_volumes_in_batch_folders(release):
    spec = {"recipe": "lits", "root": str(release)}
    cases = list_cases(spec)
    assert [c.case_id for c in cases] == ["volume-0", "volume-27", "volume-28", "volume-34", "volume-35"]
    assert all(c.labeled for c in cases)
    assert [c.label.name for c in cases][:2] == ["segmentation-0.nii", "segmentation-27.nii"]
    assert class_names(spec) == {1: "liver", 2: "tumor"}


def test_lits_volumes_28_and_34_get_the_fixed_spacing(release, tmp_path):
    cases = {c.case_id: c for c in list_cases({"recipe": "lits", "root": str(release)})}
    for case_id, expected in (("volume-28", FIXED_SPACING[28]), ("volume-34", (0.7, 0.7, 2.5)),
                              ("volume-35", mimic_lits.SPACING)):
        image, label = read_case(cases[case_id])
        assert np.allclose(image.GetSpacing(), expected) and label.GetSpacing() == image.GetSpacing()
    # At 1.4 x 1.4 x 5 mm the fixed volume halves in every axis; with the file's 1 mm it would shrink
    # to 14/20 in X and Y and grow 5-fold in Z.
    standardize_case(cases["volume-28"], tmp_path / "out", StandardizeParams(spacing_mm=(1.4, 1.4, 5.0)))
    label = np.load(tmp_path / "out" / "label.npy")
    assert np.allclose(label.shape, np.array(mimic_lits.SIZE) / 2, atol=1)
