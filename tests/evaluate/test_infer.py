from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mass_core.evaluate.fewshot import FewshotParams
from mass_core.datasets import CaseSource
from mass_core.evaluate.infer import InferParams, label_map, main_infer, read_scan, segment_scan
from mass_core.geometry import Grid
from mass_core.imageio import read_image
from mass_core.phantom import LABELS, PhantomParams, make_phantom
from mass_core.pretrain.checkpoint import load_checkpoint, save_checkpoint
from mass_core.standardize import StandardizeParams, standardize_case, standardize_images

from .conftest import save_mass_checkpoint

# 120 mm field of view at a coarse grid, so that a case has a few thousand voxels.
PHANTOM = PhantomParams(shape=(40, 40, 24), spacing_mm=(3.0, 3.0, 5.0), noise_hu=5.0)
PARAMS = InferParams(standardize=StandardizeParams(spacing_mm=(4.0, 4.0, 4.0)),
                     window=FewshotParams(crop=(16, 16, 16), roi=(16, 16, 16), device="cpu"))


def phantom_images(index: int) -> tuple[sitk.Image, sitk.Image]:
    """A phantom case stored in a non-RAS orientation: axes X and Y swapped and Z flipped (same physical space)."""
    case = make_phantom(index, PHANTOM)
    images = []
    for array in (case.image_hu, case.label):
        image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
        image.SetSpacing(case.spacing_mm)
        image.SetOrigin(case.origin_mm)
        images.append(sitk.Flip(sitk.PermuteAxes(image, [1, 0, 2]), [False, False, True]))
    assert images[0].GetDirection() != (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    return images[0], images[1]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_round_trip_on_a_non_ras_case_is_aligned_with_the_original_labels():
    image, label = phantom_images(0)
    labels = sorted(int(v) for v in np.unique(sitk.GetArrayFromImage(label)) if v > 0)
    truth_std = standardize_images(image, label, "truth", "CT", PARAMS.standardize)

    def perfect(volume: np.ndarray) -> np.ndarray:
        # Stand-in for the model: the ground truth on the standardized grid, as probabilities.
        np.testing.assert_allclose(volume, truth_std.image)
        return np.stack([truth_std.label == c for c in labels]).astype(np.float32)

    predicted = segment_scan(image, perfect, labels, PARAMS, "test")
    for getter in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(predicted, getter)() == pytest.approx(getattr(image, getter)())
    pred, truth = sitk.GetArrayFromImage(predicted), sitk.GetArrayFromImage(label)
    for c in labels:
        # Left and right kidneys are separate classes: a flipped axis would give ~0 here.
        minimum = 0.5 if LABELS[c] == "lesion" else 0.75
        assert dice(pred == c, truth == c) > minimum, LABELS[c]


def test_label_map_takes_the_most_probable_label_above_threshold():
    probabilities = np.array([[[[0.9, 0.6, 0.2]]], [[[0.7, 0.8, 0.4]]]], np.float32)  # (K=2, 1, 1, 3)
    np.testing.assert_array_equal(label_map(probabilities, [3, 5], 0.5)[0, 0], [3, 5, 0])


def write(image: sitk.Image, path: Path) -> str:
    sitk.WriteImage(image, str(path))
    return str(path)


def test_cli_segments_in_context_with_a_multilabel_reference(tmp_path):
    ref_image, ref_label = phantom_images(1)
    test_image, _ = phantom_images(2)
    checkpoint = save_mass_checkpoint(tmp_path / "final.pt")
    args = [write(test_image, tmp_path / "scan.nrrd"), "--checkpoint", str(checkpoint), "--reference", write(ref_image, tmp_path / "ref.nii.gz"), write(ref_label, tmp_path / "ref_seg.nii.gz"),
            "--out-dir", str(tmp_path / "out"), "--spacing", "6", "6", "6", "--crop", "16", "16", "16", "--roi", "16", "16", "16",
            "--device", "cpu", "--labels", "1", "2", "6"]
    assert main_infer(args) == 0
    output = sitk.ReadImage(str(tmp_path / "out" / "scan.nrrd"))
    for getter in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(output, getter)() == pytest.approx(getattr(test_image, getter)())
    assert set(np.unique(sitk.GetArrayFromImage(output))) <= {0, 1, 2, 6}


def test_cli_reports_bad_geometry(tmp_path, capsys):
    ref_image, ref_label = phantom_images(1)
    checkpoint = str(save_mass_checkpoint(tmp_path / "final.pt"))
    scan = write(ref_image, tmp_path / "scan.nii.gz")
    common = ["--checkpoint", checkpoint, "--out-dir", str(tmp_path / "out"), "--device", "cpu"]

    # A mask on another grid than its image.
    shifted = sitk.Image(ref_label)
    shifted.SetOrigin([o + 7.0 for o in ref_label.GetOrigin()])
    assert main_infer([*common, "--reference", scan, write(shifted, tmp_path / "bad_seg.nii.gz"), scan]) == 1
    err = capsys.readouterr().err
    assert "reference scan.nii.gz (mask bad_seg.nii.gz)" in err and "label origin" in err and "does not match image origin" in err

    # A format whose segmentation could not be written back like its input.
    (tmp_path / "scan.png").write_bytes(b"")
    assert main_infer([*common, "--reference", scan, write(ref_label, tmp_path / "seg.nii.gz"), str(tmp_path / "scan.png")]) == 1
    assert "unsupported file type" in capsys.readouterr().err

    # Writing next to the input would overwrite it.
    assert main_infer([*common[:2], "--out-dir", str(tmp_path), "--reference", scan, str(tmp_path / "seg.nii.gz"), scan]) == 1
    assert "overwrite" in capsys.readouterr().err


def _nrrd_without_space(array: np.ndarray, path: Path) -> Path:
    """An NRRD with spacings but no ``space`` field, as some exporters write it (array in (X, Y, Z))."""
    header = (f"NRRD0004\ntype: int16\ndimension: 3\nsizes: {' '.join(map(str, array.shape))}\n"
              "spacings: 3 3 5\nencoding: raw\nendian: little\n\n")
    path.write_bytes(header.encode() + np.ascontiguousarray(array.transpose(2, 1, 0), "<i2").tobytes())
    return path


def test_infer_reads_the_scans_that_standardize_reads(tmp_path):
    array = make_phantom(1, PHANTOM).image_hu.astype(np.int16)
    no_qform = nib.Nifti1Image(array, np.diag([3.0, 3.0, 5.0, 1.0]))
    no_qform.set_qform(None, code=0)
    no_qform.set_sform(None, code=0)
    nib.save(no_qform, tmp_path / "no_qform.nii.gz")
    assert int(nib.load(tmp_path / "no_qform.nii.gz").header["qform_code"]) == 0
    no_space = _nrrd_without_space(array, tmp_path / "no_space.nrrd")

    for path in (tmp_path / "no_qform.nii.gz", no_space):
        meta = standardize_case(CaseSource(path.name, path, None, "CT"), tmp_path / path.name.split(".")[0], PARAMS.standardize)
        assert meta["status"] == "ok"
        standardized, inferred = read_image(path, "c"), read_scan(path, "test image")
        np.testing.assert_array_equal(sitk.GetArrayFromImage(inferred), sitk.GetArrayFromImage(standardized))
        assert Grid.of(inferred) == Grid.of(standardized)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(inferred).transpose(2, 1, 0), array)


def test_cli_names_a_missing_or_unfit_checkpoint_in_one_line(tmp_path, capsys):
    ref_image, ref_label = phantom_images(1)
    scan, mask = write(ref_image, tmp_path / "scan.nii.gz"), write(ref_label, tmp_path / "seg.nii.gz")
    mim = tmp_path / "mim" / "final.pt"
    save_checkpoint(mim, dataclasses.replace(load_checkpoint(save_mass_checkpoint(tmp_path / "final.pt")), method="mim"))
    for checkpoint, message in [
        (tmp_path / "missing.pt", f"checkpoint {tmp_path / 'missing.pt'} not found"),
        (mim, f"{mim} is a 'mim' checkpoint; in-context segmentation needs a MASS checkpoint (results/pretrain/mass/final.pt)"),
    ]:
        args = ["--checkpoint", str(checkpoint), "--out-dir", str(tmp_path / "out"), "--device", "cpu", "--reference", scan, mask, scan]
        assert main_infer(args) == 1
        assert capsys.readouterr().err.splitlines() == [f"mass-core infer: error: {message}"]
