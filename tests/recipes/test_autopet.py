"""autoPET recipes on a mimic of the NIfTI release: studies by date, the mask on the CT grid, splits by patient."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

import mimic_autopet
from mass_core.datasets import class_names, list_cases
from mass_core.manifest import SplitParams, build_manifest
from mass_core.raw_case import read_case
from mass_core.standardize import StandardizeParams, run_standardize

DATASETS = ("autopet_ct", "autopet_suv")
MIMIC = mimic_autopet
RELEASE_FOLDER = "FDG-PET-CT-Lesions"


def _cases(root, dataset):
    return list_cases({"recipe": dataset, "root": str(root)})


def test_studies_of_a_patient_are_numbered_by_date(release):
    expected = {f"{patient}_{k}": (patient, study) for patient, studies in mimic_autopet.STUDIES.items()
                for k, study in enumerate(studies)}
    for dataset, image in (("autopet_ct", "CT.nii.gz"), ("autopet_suv", "SUV.nii.gz")):
        cases = _cases(release, dataset)
        assert {c.case_id: (c.subject, c.image.parent.name) for c in cases} == expected
        assert {c.image.name for c in cases} == {image} and {c.label.name for c in cases} == {"SEG.nii.gz"}
        assert class_names({"recipe": dataset, "root": str(release)}) == {1: "lesion"}
    assert {c.modality for c in _cases(release, "autopet_suv")} == {"PET"}


def test_the_pet_grid_mask_is_resampled_onto_the_ct(release):
    ct_case, suv_case = (next(c for c in _cases(release, d) if c.case_id == "PETCT_0af7ffe12a_1") for d in DATASETS)
    ct, label = read_case(ct_case)
    seg = sitk.ReadImage(str(suv_case.label))
    assert label.GetSize() == ct.GetSize() and label.GetSpacing() == ct.GetSpacing()
    # Each PET voxel covers 2 x 2 x 2 CT voxels of the mimic, centred on the same point.
    coarse, fine = sitk.GetArrayFromImage(seg), sitk.GetArrayFromImage(label)
    assert coarse.sum() > 0 and fine.sum() == 8 * coarse.sum()
    centre = np.mean(np.argwhere(coarse)[:, ::-1], axis=0)
    assert np.allclose(seg.TransformContinuousIndexToPhysicalPoint(centre.tolist()),
                       label.TransformContinuousIndexToPhysicalPoint(np.mean(np.argwhere(fine)[:, ::-1], axis=0).tolist()))
    suv, suv_label = read_case(suv_case)
    assert suv_label.GetSize() == seg.GetSize() == suv.GetSize()


def test_a_patient_lands_in_one_split_in_both_datasets(tmp_path):
    release = tmp_path / "FDG-PET-CT-Lesions"
    mimic_autopet.write(release)
    # One CT file is unreadable (its case is skipped) and one missing (no case; the listing names it), in
    # the CT dataset only: study numbers stay, and no patient moves.
    studies = mimic_autopet.STUDIES["PETCT_86153b2974"]
    (release / "PETCT_86153b2974" / studies[1] / "CT.nii.gz").write_bytes(b"broken")
    (release / "PETCT_86153b2974" / studies[2] / "CT.nii.gz").unlink()
    params = StandardizeParams(spacing_mm=(4.0, 4.0, 4.0))
    splits = {}
    for dataset in DATASETS:
        metas = [tmp_path / dataset / c.case_id / "meta.json" for c in _cases(release, dataset)]
        for case, meta in zip(_cases(release, dataset), metas):
            run_standardize(case, meta.parent, params, on_error="skip")
        manifest = build_manifest(metas, tmp_path / dataset / "manifest.parquet", tmp_path / dataset / "skipped.csv",
                                  SplitParams(val_fraction=0.2, test_fraction=0.3, seed=0))
        by_patient = manifest.groupby(manifest["case_id"].str.rsplit("_", n=1).str[0])["split"].agg(set)
        assert all(len(found) == 1 for found in by_patient), f"{dataset}: a patient's studies in several splits"
        splits[dataset] = {patient: found.pop() for patient, found in by_patient.items()}
    assert len(splits["autopet_ct"]) == len(splits["autopet_suv"]) == len(mimic_autopet.STUDIES)
    assert splits["autopet_ct"] == splits["autopet_suv"]
    assert {"train", "test"} <= set(splits["autopet_suv"].values())  # the seed gives both splits patients
    assert (tmp_path / "autopet_ct" / "skipped.csv").read_text().count("PETCT_86153b2974_1") == 1
    assert {c.case_id for c in _cases(release, "autopet_suv")} - {c.case_id for c in _cases(release, "autopet_ct")} == {
        "PETCT_86153b2974_2"}
