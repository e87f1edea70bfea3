"""StructSeg recipes on a mimic of the release: numbered patient folders, the challenge's class tables."""

from __future__ import annotations

import numpy as np
import pytest

import mimic_structseg
from mass_core.datasets import class_names, list_cases
from mass_core.standardize import StandardizeParams, standardize_case

MIMIC = mimic_structseg
RELEASE_FOLDER = "StructSeg2019"


@pytest.mark.parametrize("recipe, ids, labeled, n_classes, organs", [
    ("structseg_head_oar", ["1", "10"], [True, False], 22, mimic_structseg.HEAD_ORGANS),
    ("structseg_thoracic_oar", ["3", "7"], [True, True], 6, mimic_structseg.THORACIC_ORGANS),
])
def test_structseg_patient_folders(release, tmp_path, recipe, ids, labeled, n_classes, organs):
    spec = {"recipe": recipe, "root": str(release / mimic_structseg.DATASETS[recipe])}
    cases = list_cases(spec)
    assert [c.case_id for c in cases] == ids and [c.labeled for c in cases] == labeled
    names = class_names(spec)
    assert sorted(names) == list(range(1, n_classes + 1)) and len(set(names.values())) == n_classes
    meta = standardize_case(cases[0], tmp_path / "out", StandardizeParams(spacing_mm=(1.5, 1.5, 2.5)))
    assert meta["label_classes"] == sorted(organs)
    assert set(np.unique(np.load(tmp_path / "out" / "label.npy"))) == {0, *organs}

