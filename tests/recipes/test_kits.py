"""KiTS19 recipe on a mimic of the release's case folders."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from mass_core.datasets import class_names, list_cases
from mass_core.standardize import StandardizeParams, standardize_case
from volumes import sphere_phantom


def test_kits_lists_case_folders_and_reads_labels(tmp_path):
    image, label, _ = sphere_phantom()
    for case, labeled in (("case_00000", True), ("case_00001", True), ("case_00210", False)):
        folder = tmp_path / "data" / case
        folder.mkdir(parents=True)
        sitk.WriteImage(image, str(folder / "imaging.nii.gz"))
        if labeled:
            sitk.WriteImage(label, str(folder / "segmentation.nii.gz"))
    (tmp_path / "data" / "kits.json").write_text("[]")  # the release's metadata file is no case
    spec = {"recipe": "kits", "root": str(tmp_path / "data")}
    cases = list_cases(spec)
    assert [c.case_id for c in cases] == ["case_00000", "case_00001", "case_00210"]
    assert [c.labeled for c in cases] == [True, True, False]
    assert {c.modality for c in cases} == {"CT"}
    assert class_names(spec) == {1: "kidney", 2: "tumor"}
    meta = standardize_case(cases[0], tmp_path / "out", StandardizeParams(spacing_mm=(2.0, 2.0, 2.0)))
    assert meta["label_classes"] == [1]
    assert np.load(tmp_path / "out" / "label.npy").sum() > 0
