"""AMOS recipes on a mimic of the release: one folder, two datasets split by case number."""

from __future__ import annotations

import numpy as np

import mimic_amos
from mass_core.datasets import class_names, list_cases
from mass_core.standardize import StandardizeParams, standardize_case

MIMIC = mimic_amos
RELEASE_FOLDER = "AMOS22"


def test_amos_case_numbers_below_500_are_ct_the_rest_mr(release):
    ct = list_cases({"recipe": "amos_ct", "root": str(release)})
    mr = list_cases({"recipe": "amos_mr", "root": str(release)})
    assert [c.case_id for c in ct] == list(mimic_amos.CT_CASES)
    assert [c.case_id for c in mr] == list(mimic_amos.MR_CASES)
    assert {c.modality for c in ct} == {"CT"} and {c.modality for c in mr} == {"MR"}
    # Validation cases pair with labelsVa; the unlabeled imagesTs is not read.
    assert all(c.labeled for c in ct + mr)
    assert {c.label.parent.name for c in mr} == {"labelsTr", "labelsVa"}


def test_amos_classes_and_reading(release, tmp_path):
    ct_names = class_names({"recipe": "amos_ct", "root": str(release)})
    mr_names = class_names({"recipe": "amos_mr", "root": str(release)})
    assert len(ct_names) == 15 and ct_names[6] == "liver" and ct_names[15] == "prostate/uterus"
    assert mr_names == {k: v for k, v in ct_names.items() if k <= 13}
    case = list_cases({"recipe": "amos_mr", "root": str(release)})[0]
    meta = standardize_case(case, tmp_path / "out", StandardizeParams(spacing_mm=(1.5, 1.5, 2.5)))
    assert meta["label_classes"] == [6, 13]
    assert np.load(tmp_path / "out" / "label.npy").max() == 13
