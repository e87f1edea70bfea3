from __future__ import annotations

import locale
import json
import re

import numpy as np
import pytest
import SimpleITK as sitk

from mass_core.datasets import CaseSource, class_names, list_cases
from mass_core.errors import CaseError
from mass_core.imageio import read_image
from mass_core.standardize import StandardizeParams, run_standardize, standardize_case

from volumes import OBLIQUE_FREE_DIRECTION, make_image


def _volume(seed=0):
    rng = np.random.default_rng(seed)
    array = np.full((20, 18, 12), -1000, np.int16)
    array[3:17, 3:15, 2:10] = rng.integers(0, 80, size=(14, 12, 8))
    return make_image(array, spacing=(0.9, 1.1, 2.5), origin=(-10.0, 20.0, 5.0))


def write_dicom_series(image: sitk.Image, folder) -> None:
    """Write ``image`` as a CT DICOM series, one file per axial slice."""
    folder.mkdir(parents=True)
    saved_locale = locale.setlocale(locale.LC_ALL)
    cast = sitk.Cast(image, sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    series_tags = [
        ("0008|0060", "CT"),
        ("0020|000e", "1.2.826.0.1.3680043.2.1125.1.1234567890"),
        ("0020|000d", "1.2.826.0.1.3680043.2.1125.1.1234567891"),
        ("0020|0037", "\\".join(str(v) for v in direction[0:3] + direction[3:6])),
        ("0028|0030", f"{image.GetSpacing()[1]}\\{image.GetSpacing()[0]}"),
        ("0018|0050", str(image.GetSpacing()[2])),
    ]
    for k in range(cast.GetDepth()):
        slice_image = cast[:, :, k]
        for tag, value in series_tags:
            slice_image.SetMetaData(tag, value)
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        slice_image.SetMetaData("0020|0032", "\\".join(str(v) for v in position))
        slice_image.SetMetaData("0020|0013", str(k + 1))
        slice_image.SetMetaData("0008|0018", f"1.2.826.0.1.3680043.2.1125.1.1234567892.{k + 1}")
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(slice_image)
    # GDCM's writer switches the process to the C locale and leaves it there,
    # after which every text file read without an encoding is read as ASCII.
    locale.setlocale(locale.LC_ALL, saved_locale)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", "dicom"])
def test_every_format_reads_to_the_same_voxels_and_geometry(tmp_path, suffix):
    image = _volume()
    if suffix == "dicom":
        path = tmp_path / "series"
        write_dicom_series(image, path)
    else:
        path = tmp_path / f"case{suffix}"
        sitk.WriteImage(image, str(path))
    read = read_image(path, "c")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(read.GetSpacing(), image.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(read.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(read.GetDirection(), image.GetDirection(), atol=1e-6)


def test_dicom_series_standardizes_like_its_nifti(tmp_path):
    image = _volume()
    write_dicom_series(image, tmp_path / "series")
    sitk.WriteImage(image, str(tmp_path / "case.nii.gz"))
    a = standardize_case(CaseSource("d", tmp_path / "series", None, "CT"), tmp_path / "a", StandardizeParams())
    b = standardize_case(CaseSource("n", tmp_path / "case.nii.gz", None, "CT"), tmp_path / "b", StandardizeParams())
    assert a["crop_box"] == b["crop_box"]
    np.testing.assert_allclose(np.load(tmp_path / "a" / "image.npy"), np.load(tmp_path / "b" / "image.npy"), atol=1e-4)


def _forty_slice_series(folder):
    """A 40-slice CT series at 2 mm, its slice normal pointing along -z, so positions must be projected."""
    array = np.full((16, 14, 40), -1000, np.int16)
    array[3:13, 3:11, :] = 10 * np.arange(40, dtype=np.int16)
    image = make_image(array, spacing=(0.9, 1.1, 2.0), origin=(-10.0, 20.0, 5.0), direction=OBLIQUE_FREE_DIRECTION)
    write_dicom_series(image, folder)
    return image


def test_complete_dicom_series_keeps_its_slice_spacing(tmp_path):
    image = _forty_slice_series(tmp_path / "series")
    read = read_image(tmp_path / "series", "complete")
    np.testing.assert_allclose(read.GetSpacing(), (0.9, 1.1, 2.0), atol=1e-4)
    np.testing.assert_allclose(read.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(image))


def test_dicom_series_with_a_missing_slice_is_skipped_with_the_gap(tmp_path, capfd):
    _forty_slice_series(tmp_path / "series")
    (tmp_path / "series" / "slice020.dcm").unlink()
    case = CaseSource("gap", tmp_path / "series", None, "CT")
    meta = run_standardize(case, tmp_path / "out", StandardizeParams(), on_error="skip")
    assert meta["status"] == "skipped"
    assert meta["reason"] == ("DICOM series has non-uniform slice spacing: gap of 4 mm between slice019.dcm and slice021.dcm "
                              "(expected 2 mm); a slice is probably missing")
    # The reason is the one line the user sees, not ITK's warning about the spacing it would have assumed.
    assert capfd.readouterr().err == f"skipped: case 'gap': {meta['reason']}\n"
    assert not (tmp_path / "out" / "image.npy").exists()


def _drop_position(ds):
    del ds.ImagePositionPatient


def _two_value_orientation(ds):
    ds.ImageOrientationPatient = [1, 0]


@pytest.mark.parametrize("edit, reason", [
    (_drop_position, "DICOM file slice005.dcm has no ImagePositionPatient (0020,0032); its slice position is unknown"),
    (_two_value_orientation, "DICOM file slice005.dcm has a malformed ImagePositionPatient or ImageOrientationPatient"),
])
def test_dicom_slice_without_a_usable_position_is_rejected(tmp_path, edit, reason):
    pydicom = pytest.importorskip("pydicom")
    _forty_slice_series(tmp_path / "series")
    path = tmp_path / "series" / "slice005.dcm"
    ds = pydicom.dcmread(path)
    edit(ds)
    ds.save_as(path)
    with pytest.raises(CaseError) as caught:
        read_image(tmp_path / "series", "pos")
    assert str(caught.value) == f"case 'pos': {reason}"


def test_folder_with_two_series_is_rejected(tmp_path):
    write_dicom_series(_volume(), tmp_path / "series")
    other = tmp_path / "other"
    write_dicom_series(_volume(1), other)
    for path in other.iterdir():
        data = path.read_bytes().replace(b"1.2.826.0.1.3680043.2.1125.1.1234567890", b"1.2.826.0.1.3680043.2.1125.1.9999999990")
        (tmp_path / "series" / f"x{path.name}").write_bytes(data)
    with pytest.raises(CaseError, match="2 DICOM series"):
        read_image(tmp_path / "series", "two")


def test_folder_layout_pairs_images_and_labels_by_case_id(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for name in ("b.nrrd", "a.nii.gz", "c.mha"):
        sitk.WriteImage(_volume(), str(tmp_path / "images" / name))
    sitk.WriteImage(_volume(), str(tmp_path / "labels" / "a.nii.gz"))
    write_dicom_series(_volume(), tmp_path / "images" / "d")
    cases = list_cases({"layout": "folder", "root": str(tmp_path), "modality": "MR"})
    assert [c.case_id for c in cases] == ["a", "b", "c", "d"]
    assert cases[0].label == tmp_path / "labels" / "a.nii.gz" and cases[1].label is None
    assert cases[3].image.is_dir() and all(c.modality == "MR" for c in cases)


def test_nnunet_layout(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    for cid in ("liver_001", "liver_000"):
        sitk.WriteImage(_volume(), str(tmp_path / "imagesTr" / f"{cid}_0000.nii.gz"))
        sitk.WriteImage(_volume(), str(tmp_path / "imagesTr" / f"{cid}_0001.nii.gz"))
        sitk.WriteImage(_volume(), str(tmp_path / "labelsTr" / f"{cid}.nii.gz"))
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT", "1": "CT"}, "labels": {"background": 0, "liver": 1}, "file_ending": ".nii.gz"}))
    cases = list_cases({"layout": "nnunet", "root": str(tmp_path), "modality": "auto"})
    assert [c.case_id for c in cases] == ["liver_000", "liver_001"]
    assert cases[0].image.name == "liver_000_0000.nii.gz" and cases[0].label.name == "liver_000.nii.gz"
    assert cases[0].modality == "CT"


def test_msd_layout(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    for cid in ("spleen_2", "spleen_10"):
        sitk.WriteImage(_volume(), str(tmp_path / "imagesTr" / f"{cid}.nii.gz"))
        sitk.WriteImage(_volume(), str(tmp_path / "labelsTr" / f"{cid}.nii.gz"))
    info = {"modality": {"0": "MRI"}, "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in ("spleen_2", "spleen_10")]}
    (tmp_path / "dataset.json").write_text(json.dumps(info))
    cases = list_cases({"layout": "msd", "root": str(tmp_path), "modality": "auto"})
    assert [c.case_id for c in cases] == ["spleen_10", "spleen_2"]
    assert all(c.modality == "MR" and c.label.exists() for c in cases)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"layout": "zip", "root": "."}, "unknown dataset layout"),
        ({"layout": "folder", "root": "/nonexistent", "modality": "CT"}, "no images found"),
        ({"layout": "msd", "root": "/nonexistent", "modality": "CT"}, "has no dataset.json"),
    ],
)
def test_bad_dataset_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        list_cases(spec)


@pytest.mark.parametrize("layout", ["msd", "nnunet"])
def test_dataset_json_that_is_not_json_names_the_file_and_position(tmp_path, layout):
    (tmp_path / "dataset.json").write_text('{\n  "training": [\n    {"image": "a.nii.gz",}\n  ]\n}\n')
    with pytest.raises(ValueError) as caught:
        list_cases({"layout": layout, "root": str(tmp_path), "modality": "CT"})
    assert str(caught.value) == (f"{tmp_path / 'dataset.json'} is not valid JSON: "
                                 "Expecting property name enclosed in double quotes at line 3 column 26")


def test_msd_training_entry_without_image_names_the_file_and_entry(tmp_path):
    info = {"training": [{"image": "./imagesTr/a.nii.gz"}, {"label": "./labelsTr/b.nii.gz"}]}
    (tmp_path / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(ValueError) as caught:
        list_cases({"layout": "msd", "root": str(tmp_path), "modality": "CT"})
    assert str(caught.value) == (f"{tmp_path / 'dataset.json'}: training entry 1 (counting from 0) has no \"image\" path: "
                                 '{"label": "./labelsTr/b.nii.gz"}')


def test_repeated_msd_case_ids_are_listed(tmp_path):
    names = ["a/x", "b/x", "a/y", "b/y", "c/y"] + [f"{d}/z{i}" for i in range(5) for d in "ab"]
    info = {"training": [{"image": f"./{name}.nii.gz"} for name in names]}
    (tmp_path / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(ValueError) as caught:
        list_cases({"layout": "msd", "root": str(tmp_path), "modality": "CT"})
    assert str(caught.value) == (f"7 duplicate case id(s) in dataset at {tmp_path}: 'x', 'y', 'z0', 'z1', 'z2', ...; "
                                 "each image file name (less its extension) must be unique")


def test_duplicate_case_in_folder_is_rejected(tmp_path):
    (tmp_path / "images").mkdir()
    sitk.WriteImage(_volume(), str(tmp_path / "images" / "a.nii.gz"))
    sitk.WriteImage(_volume(), str(tmp_path / "images" / "a.nrrd"))
    with pytest.raises(ValueError, match="two files for case 'a'"):
        list_cases({"layout": "folder", "root": str(tmp_path), "modality": "CT"})


def test_class_names_from_either_dataset_json_convention(tmp_path):
    msd, nnunet, bare = tmp_path / "msd", tmp_path / "nnunet", tmp_path / "bare"
    for folder in (msd, nnunet, bare):
        folder.mkdir()
    (msd / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "liver", "2": "tumour"}}))
    (nnunet / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "kidney": 1, "kidney_and_mass": [1, 2], "mass": 2}}))
    assert class_names({"layout": "msd", "root": str(msd)}) == {1: "liver", 2: "tumour"}
    assert class_names({"layout": "nnunet", "root": str(nnunet)}) == {1: "kidney", 2: "mass"}
    assert class_names({"layout": "folder", "root": str(bare)}) == {}
    # The phantom's names are known before the dataset is generated.
    phantom = class_names({"layout": "phantom", "root": str(tmp_path / "not_yet")})
    assert phantom[1] == "liver" and phantom[7] == "lesion" and 0 not in phantom


def test_case_id_unfit_for_a_wildcard_names_the_file_to_rename(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("ok_1.nii.gz", "scan{1}.nii.gz", "a,b.nrrd", "-x.mha"):
        sitk.WriteImage(_volume(), str(tmp_path / "images" / name))
    with pytest.raises(ValueError) as caught:
        list_cases({"layout": "folder", "root": str(tmp_path), "modality": "CT"})
    assert str(caught.value) == (
        f"{tmp_path / 'images' / '-x.mha'}: case id '-x' starts with '-'; case ids name output files, Snakemake wildcards "
        "and cluster jobs, so they may hold only ASCII letters, digits, '.', '_', '-' and '+', and start with a letter, "
        "digit or '_'; rename the file (2 more files need renaming: a,b.nrrd, scan{1}.nii.gz)")


@pytest.mark.parametrize("name, problem", [("scan{1}", "contains '{', '}'"), ("a b", "contains ' '"), ("50%", "contains '%'"),
                                           ("tête", "contains 'ê'"), ("", "is empty")])
def test_case_id_problem_is_named(tmp_path, name, problem):
    (tmp_path / "imagesTr").mkdir()
    sitk.WriteImage(_volume(), str(tmp_path / "imagesTr" / f"{name}_0000.nii.gz"))
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}}))
    prefix = re.escape(f"{tmp_path / 'imagesTr' / f'{name}_0000.nii.gz'}: case id '{name}' {problem}; ")
    with pytest.raises(ValueError, match=f"^{prefix}"):
        list_cases({"layout": "nnunet", "root": str(tmp_path), "modality": "auto"})
