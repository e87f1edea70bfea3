"""BTCV recipe on a mimic of the release: the wrong headers are replaced, so organs land on their true side."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import mimic_bcv
from mass_core.datasets import class_names, list_cases
from mass_core.standardize import StandardizeParams, standardize_case

MIMIC = mimic_bcv
RELEASE_FOLDER = "BTCV"

PARAMS = StandardizeParams(spacing_mm=(1.5, 1.5, 2.5))


def _liver_offset(case, out):
    """Liver centre minus body centre in voxels of the standardized RAS array: +X is the patient's right, +Y anterior."""
    standardize_case(case, out, PARAMS)
    label = np.load(out / "label.npy")
    image = np.load(out / "image.npy")
    return np.argwhere(label == 6).mean(axis=0) - np.argwhere(image > image.min()).mean(axis=0)


@pytest.mark.parametrize("root", ["RawData/Training", "RawData", "."])
def test_bcv_lists_training_cases_from_the_release_or_above(release, root):
    cases = list_cases({"recipe": "bcv", "root": str(release / root)})
    assert [c.case_id for c in cases] == ["img0001", "img0002"]
    assert all(c.labeled and c.modality == "CT" for c in cases)
    assert cases[1].label.name == "label0002.nii.gz"


def test_bcv_header_fix_puts_the_liver_on_the_patients_right_and_front(release, tmp_path):
    spec = {"recipe": "bcv", "root": str(release / mimic_bcv.DATASETS["bcv"])}
    case = list_cases(spec)[0]
    assert class_names(spec)[6] == "liver" and len(class_names(spec)) == 13
    right, anterior, _ = _liver_offset(case, tmp_path / "fixed")
    assert right > 2 and anterior > 2
    # The release's own header would put it on the left, at the back.
    right, anterior, _ = _liver_offset(dataclasses.replace(case, direction=None), tmp_path / "as_released")
    assert right < -2 and anterior < -2
