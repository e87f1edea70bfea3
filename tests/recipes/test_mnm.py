"""M&Ms recipe on a mimic of the OpenDataset: labeled frames of 4D cines as cases."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

import mimic_mnm
from mass_core.datasets import class_names, list_cases
from mass_core.errors import CaseError
from mass_core.raw_case import read_case
from mass_core.standardize import StandardizeParams, standardize_case

MIMIC = mimic_mnm
RELEASE_FOLDER = "OpenDataset"


def _labeled_frames(label_path) -> list[int]:
    """The official MASS code's rule: the frames whose label has a nonzero voxel, in time order."""
    labels = np.asanyarray(nib.load(str(label_path)).dataobj)  # (X, Y, Z, T)
    return [t for t in range(labels.shape[3]) if labels[..., t].any()]


def test_each_labeled_frame_is_a_case_of_its_subject(release):
    cases = list_cases({"recipe": "mnm", "root": str(release)})
    assert [c.case_id for c in cases] == ["A0S9V9_0", "A0S9V9_1", "A1D0Q7_0", "A1D0Q7_1", "A1E9Q1_0", "A1E9Q1_1"]
    assert {c.subject for c in cases} == {"A0S9V9", "A1D0Q7", "A1E9Q1"}  # not the unlabeled training subject
    for subject in ("A0S9V9", "A1D0Q7", "A1E9Q1"):
        frames = [c.frame for c in cases if c.subject == subject]
        assert frames == _labeled_frames(next(c.label for c in cases if c.subject == subject))
    assert class_names({"recipe": "mnm", "root": str(release)}) == {1: "left ventricle", 2: "myocardium", 3: "right ventricle"}


def test_a_case_reads_its_own_frame_and_standardizes(release, tmp_path):
    cases = {c.case_id: c for c in list_cases({"recipe": "mnm", "root": str(release)})}
    case = cases["A1D0Q7_1"]  # ED is frame 4 and ES frame 1: the later frame is case _1
    image, label = read_case(case)
    assert image.GetDimension() == 3 and sitk.GetArrayViewFromImage(image)[0, 0, 0] == 4
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label), mimic_mnm._heart(4))
    meta = standardize_case(case, tmp_path / "out", StandardizeParams(spacing_mm=(2.0, 2.0, 2.0)))
    assert meta["subject"] == "A1D0Q7" and meta["source"]["frame"] == 4
    assert meta["label_classes"] == [1, 2, 3]


def test_a_table_that_disagrees_with_the_labels_fails_for_that_case(release, tmp_path):
    table = (release / mimic_mnm.TABLE).read_text()
    root = tmp_path / "OpenDataset"
    mimic_mnm.write(root)
    (root / mimic_mnm.TABLE).write_text(table.replace("A0S9V9,Siemens,A,1,0,3", "A0S9V9,Siemens,A,1,0,2"))
    case = next(c for c in list_cases({"recipe": "mnm", "root": str(root)}) if c.case_id == "A0S9V9_1")
    with pytest.raises(CaseError, match="A0S9V9_1.*frame 2 of the label holds no labeled voxel"):
        read_case(case)
    (root / mimic_mnm.TABLE).write_text(table.replace("A1E9Q1,", "Z9Z9Z9,"))
    with pytest.raises(ValueError, match="subject 'A1E9Q1' .* has no ED/ES row"):
        list_cases({"recipe": "mnm", "root": str(root)})
    (root / mimic_mnm.TABLE).unlink()
    with pytest.raises(ValueError, match="no CSV with columns External code, ED, ES"):
        list_cases({"recipe": "mnm", "root": str(root)})
