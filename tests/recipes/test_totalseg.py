"""TotalSegmentator recipes on a mimic of the release: per-structure masks merged with the table's ids."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

import mimic_totalseg
from ct_blobs import write_volume
from mass_core.datasets import class_names, list_cases
from mass_core.raw_case import read_case
from mass_core.standardize import StandardizeParams, standardize_case

MIMIC = mimic_totalseg
RELEASE_FOLDER = "TotalSegmentator"


def _label(case) -> np.ndarray:
    return sitk.GetArrayFromImage(read_case(case)[1]).transpose(2, 1, 0)


@pytest.mark.parametrize("recipe, n_classes", [("totalseg_ct", 117), ("totalseg_mr", 50)])
def test_totalseg_class_table_lists_every_merged_id(release, recipe, n_classes):
    spec = {"recipe": recipe, "root": str(release / mimic_totalseg.DATASETS[recipe])}
    names = class_names(spec)
    assert sorted(names) == list(range(1, n_classes + 1)) and len(set(names.values())) == n_classes
    for case in list_cases(spec):
        # Each merged id is the class whose name is the mask file's.
        assert all(names[class_id] == path.name.removesuffix(".nii.gz") for class_id, path in case.label_parts)


def test_totalseg_ct_merges_masks_with_totalsegmentator_ids(release):
    spec = {"recipe": "totalseg_ct", "root": str(release / "ct")}
    cases = list_cases(spec)
    assert [c.case_id for c in cases] == ["s0000", "s0001"] and all(c.labeled for c in cases)
    assert len(cases[0].label_parts) == 117 and len(cases[1].label_parts) == 116
    names = {name: class_id for class_id, name in class_names(spec).items()}
    assert (names["spleen"], names["liver"], names["aorta"]) == (1, 5, 52)  # TotalSegmentator's "total" ids
    masks = mimic_totalseg.MASKS
    label = _label(cases[0])
    expected = np.zeros(mimic_totalseg.SIZE, np.uint16)
    for name in ("liver", "aorta", "spleen"):  # table order: the aorta (52) is merged after the liver (5)
        expected[masks[name]] = names[name]
    np.testing.assert_array_equal(label, expected)
    # Without the aorta's file the liver keeps the overlap.
    label = _label(cases[1])
    assert label[masks["aorta"]].max() == names["liver"] and names["aorta"] not in label


def test_totalseg_mr_reads_mri_with_mr_ids(release, tmp_path):
    spec = {"recipe": "totalseg_mr", "root": str(release / "mr")}
    (case,) = list_cases(spec)
    assert case.case_id == "s0003" and case.modality == "MR" and case.image.name == "mri.nii.gz"
    assert set(np.unique(_label(case))) == {0, 1, 5, 23}  # spleen, liver, aorta in "total_mr"
    meta = standardize_case(case, tmp_path / "out", StandardizeParams(spacing_mm=(1.0, 1.0, 1.0)))
    assert meta["label_classes"] == [1, 5, 23] and meta["source"]["label_parts"]["23"].endswith("aorta.nii.gz")
    assert class_names(spec)[23] == "aorta"
    with pytest.raises(ValueError, match="recipe 'totalseg_ct': no cases found"):  # no ct.nii.gz there
        list_cases({"recipe": "totalseg_ct", "root": str(release / "mr")})


def test_totalseg_masks_of_another_naming_are_an_error_naming_them(tmp_path):
    # A case whose masks all carry unknown names would otherwise become an unlabeled case.
    folder = tmp_path / "s0009"
    write_volume(np.zeros((4, 4, 4), np.int16), folder / "ct.nii.gz")
    for name in ("Liver", "Spleen", "Aorta", "Heart"):
        write_volume(np.zeros((4, 4, 4), np.uint8), folder / "segmentations" / f"{name}.nii.gz")
    (folder / "segmentations" / "notes.txt").write_text("not a mask")
    with pytest.raises(ValueError, match=r"^case 's0009': none of the 4 mask files in .*s0009/segmentations is a "
                                         r"TotalSegmentator CT structure \(found Aorta\.nii\.gz, Heart\.nii\.gz, "
                                         r"Liver\.nii\.gz, \.\.\.; expected the v2 class names, e\.g\. spleen\.nii\.gz, "
                                         r"kidney_right\.nii\.gz, kidney_left\.nii\.gz\); this recipe reads the release's v2 naming$"):
        list_cases({"recipe": "totalseg_ct", "root": str(tmp_path)})
    # One known structure among them is enough: the unknown files are just not read.
    write_volume(np.zeros((4, 4, 4), np.uint8), folder / "segmentations" / "liver.nii.gz")
    (case,) = list_cases({"recipe": "totalseg_ct", "root": str(tmp_path)})
    assert [path.name for _, path in case.label_parts] == ["liver.nii.gz"]
