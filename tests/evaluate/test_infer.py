from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from mass_core.evaluate.fewshot import FewshotParams, class_probabilities, load_incontext_segmenter, reference_tokens
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
# What a checkpoint trained on CT standardized at 6 mm records (lists: as read back from the file).
TRAINED = StandardizeParams(spacing_mm=(6.0, 6.0, 6.0), ct_clip_hu=(-1000.0, 400.0))
RECORDS = [{"modality": "CT", "params": json.loads(json.dumps(dataclasses.asdict(TRAINED))), "cases": 3}]
# The training crop such a checkpoint records (a list: as read back from the file).
CROP = [16, 16, 16]


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
    checkpoint = save_mass_checkpoint(tmp_path / "final.pt", standardization=RECORDS)
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
    checkpoint = str(save_mass_checkpoint(tmp_path / "final.pt", standardization=RECORDS, crop_size=CROP))
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


def _infer(tmp_path: Path, checkpoint: Path, out: str, *options: str) -> sitk.Image:
    ref_image, ref_label = phantom_images(1)
    test_image, _ = phantom_images(2)
    args = [write(test_image, tmp_path / "scan.nii.gz"), "--checkpoint", str(checkpoint),
            "--reference", write(ref_image, tmp_path / "ref.nii.gz"), write(ref_label, tmp_path / "ref_seg.nii.gz"),
            "--out-dir", str(tmp_path / out), "--device", "cpu",
            "--labels", "1", "6", "--threshold", "0.45", *options]
    assert main_infer(args) == 0
    output = sitk.ReadImage(str(tmp_path / out / "scan.nii.gz"))
    for getter in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(output, getter)() == pytest.approx(getattr(test_image, getter)(), abs=1e-4)
    return output


def test_infer_without_options_standardizes_and_crops_like_the_checkpoint_and_says_so(tmp_path, capsys):
    recorded = save_mass_checkpoint(tmp_path / "recorded.pt", standardization=RECORDS, crop_size=CROP)
    old = save_mass_checkpoint(tmp_path / "old.pt")
    from_checkpoint = _infer(tmp_path, recorded, "a")
    log = capsys.readouterr().err
    assert "spacing_mm 6 6 6 (checkpoint)" in log and "ct_clip_hu -1000 400 (checkpoint)" in log and "modality CT (checkpoint)" in log
    assert "; reference_crop 16 16 16 (checkpoint); sliding_window 16 16 16 (checkpoint)" in log
    # The same weights without records, given the same settings by hand: the same segmentation, voxel for voxel
    # (with the 32^3 windows infer used to default to, a third of the voxels differ).
    by_hand = _infer(tmp_path, old, "b", "--spacing", "6", "6", "6", "--ct-window", "-1000", "400",
                     "--crop", "16", "16", "16", "--roi", "16", "16", "16")
    log = capsys.readouterr().err
    assert "spacing_mm 6 6 6 (command line)" in log
    assert "reference_crop 16 16 16 (command line); sliding_window 16 16 16 (command line)" in log
    np.testing.assert_array_equal(sitk.GetArrayFromImage(from_checkpoint), sitk.GetArrayFromImage(by_hand))
    assert np.count_nonzero(sitk.GetArrayFromImage(from_checkpoint)) > 0
    # An option on the command line replaces the checkpoint's setting, each setting on its own.
    _infer(tmp_path, recorded, "c", "--spacing", "5", "5", "5", "--crop", "8", "8", "8")
    log = capsys.readouterr().err
    assert "spacing_mm 5 5 5 (command line); ct_clip_hu -1000 400 (checkpoint)" in log
    assert "reference_crop 8 8 8 (command line); sliding_window 16 16 16 (checkpoint)" in log


def test_infer_asks_for_the_spacing_and_crop_of_a_checkpoint_without_records(tmp_path, capsys):
    ref_image, ref_label = phantom_images(1)
    scan, mask = write(ref_image, tmp_path / "scan.nii.gz"), write(ref_label, tmp_path / "seg.nii.gz")
    old = save_mass_checkpoint(tmp_path / "final.pt")
    common = ["--checkpoint", str(old), "--out-dir", str(tmp_path / "out"), "--reference", scan, mask, scan]
    assert main_infer(common) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"mass-core infer: error: checkpoint {old} records no standardization") and "--spacing X Y Z" in line
    # Given the spacing, it asks for the crop sizes it cannot know, and only for those.
    assert main_infer([*common, "--spacing", "6", "6", "6", "--roi", "16", "16", "16"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (f"mass-core infer: error: checkpoint {old} records no training crop (written before checkpoints carried it); pass "
                    "--crop X Y Z with the pretraining crop size pretrain.mass.sampler.crop_size (the demo's config/config.yaml: 32 32 32)")


def test_batched_windows_predict_what_single_windows_do(tmp_path):
    image, label = phantom_images(1)
    case = standardize_images(image, label, "ref", "CT", PARAMS.standardize)
    model = load_incontext_segmenter(save_mass_checkpoint(tmp_path / "final.pt"))
    device = torch.device("cpu")
    tokens = reference_tokens(model, {"ref": (case.image, case.label)}, {1: ["ref"], 6: ["ref"]}, (16, 16, 16), device)
    single = class_probabilities(model, case.image, tokens, (16, 16, 16), 0.5, 1, device)
    assert single.shape == (2, *case.image.shape) and 0 < single.std()
    for sw_batch in (2, 5):
        # Windows are independent (instance norm, per-window attention); batched convolutions
        # take other kernels, so probabilities agree to float32 rounding, not bit for bit.
        np.testing.assert_allclose(class_probabilities(model, case.image, tokens, (16, 16, 16), 0.5, sw_batch, device), single, atol=1e-5)
