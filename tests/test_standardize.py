from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mass_core.datasets import CaseSource
from mass_core.errors import CaseError
from mass_core.geometry import to_original_space
from mass_core.standardize import StandardizeParams, foreground_box, normalise, run_standardize, standardize_case

from volumes import make_image, sphere_phantom


def _ras_voxel_to_lps(meta, ijk):
    """Physical LPS position of standardized voxel ``ijk``, from meta.json alone.

    RAS array axes run towards -x and -y of LPS, so the sign flips are
    written out here rather than taken from SimpleITK.
    """
    crop0 = np.array([lo for lo, _ in meta["crop_box"]])
    origin = np.asarray(meta["grid"]["origin"])
    step = np.asarray(meta["spacing"]) * (np.asarray(ijk) + crop0)
    return origin + step * np.array([-1.0, -1.0, 1.0])


def test_sphere_lands_at_its_physical_place_and_size(sphere_case, tmp_path):
    image_path, label_path, centre, radius = sphere_case
    meta = standardize_case(CaseSource("sphere", image_path, label_path, "CT"), tmp_path / "out", StandardizeParams())
    label = np.load(tmp_path / "out" / "label.npy")
    assert meta["spacing"] == [1.5, 1.5, 1.5]
    centroid = _ras_voxel_to_lps(meta, np.argwhere(label == 1).mean(axis=0))
    np.testing.assert_allclose(centroid, centre, atol=0.75)
    volume = label.sum() * 1.5**3
    assert volume == pytest.approx(4 / 3 * np.pi * radius**3, rel=0.1)
    # The sphere is bright: the standardized image agrees with the label.
    image = np.load(tmp_path / "out" / "image.npy", mmap_mode="r")
    assert image.dtype == np.float32 and image.shape == label.shape
    assert image[label == 1].mean() > image[label == 0].mean() + 1.0


def test_written_arrays_are_ras_for_nibabel(sphere_case, tmp_path):
    image_path, label_path, _, _ = sphere_case
    meta = standardize_case(CaseSource("sphere", image_path, label_path, "CT"), tmp_path / "out", StandardizeParams())
    # nibabel reads the original file independently; its RAS+ world coordinates
    # of the sphere centre must equal ours (LPS with x and y negated).
    original = nib.load(str(label_path))
    ras_world = nib.affines.apply_affine(original.affine, np.argwhere(np.asanyarray(original.dataobj) == 1).mean(axis=0))
    label = np.load(tmp_path / "out" / "label.npy")
    ours_lps = _ras_voxel_to_lps(meta, np.argwhere(label == 1).mean(axis=0))
    np.testing.assert_allclose(ours_lps * np.array([-1, -1, 1]), ras_world, atol=0.75)
    # Moving along array axis 0 must move towards the patient's Right (+x in RAS).
    step = _ras_voxel_to_lps(meta, (1, 0, 0)) - _ras_voxel_to_lps(meta, (0, 0, 0))
    assert step[0] * -1 > 0 and step[1] == 0 and step[2] == 0


@pytest.mark.parametrize("spacing", [(1.5, 1.5, 1.5), (1.2, 1.0, 2.0)])
def test_round_trip_to_original_space(sphere_case, tmp_path, spacing):
    image_path, label_path, _, _ = sphere_case
    meta = standardize_case(CaseSource("sphere", image_path, label_path, "CT"), tmp_path / "out", StandardizeParams(spacing_mm=spacing))
    back = to_original_space(np.load(tmp_path / "out" / "label.npy"), meta)
    original = sitk.ReadImage(str(label_path))
    for getter in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        np.testing.assert_allclose(getattr(back, getter)(), getattr(original, getter)(), atol=1e-6)
    a, b = sitk.GetArrayFromImage(back) == 1, sitk.GetArrayFromImage(original) == 1
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) >= 0.95


def test_to_original_space_rejects_wrong_shape(sphere_case, tmp_path):
    image_path, label_path, _, _ = sphere_case
    meta = standardize_case(CaseSource("sphere", image_path, label_path, "CT"), tmp_path / "out", StandardizeParams())
    with pytest.raises(ValueError, match="does not match"):
        to_original_space(np.zeros((3, 3, 3), np.uint8), meta)


def test_crop_keeps_body_plus_margin_and_ignores_specks():
    array = np.full((60, 60, 40), -1000.0, np.float32)
    array[20:40, 15:45, 10:30] = 40.0
    array[2, 2, 2] = 500.0  # a speck in the air must not widen the box
    box = foreground_box(array, -500.0, (1.5, 1.5, 1.5), margin_mm=3.0, case_id="c")
    assert box == ((18, 42), (13, 47), (8, 32))


def test_ct_normalisation_clips_then_zscores_on_foreground():
    array = np.array([-2000.0, -991.0, 0.0, 500.0, 3000.0], np.float32)
    foreground = np.array([False, True, True, True, True])
    out, stats = normalise(array, foreground, "CT", StandardizeParams(), "c")
    clipped_fg = np.array([-991.0, 0.0, 500.0, 500.0])
    assert stats["mean"] == pytest.approx(clipped_fg.mean()) and stats["std"] == pytest.approx(clipped_fg.std())
    np.testing.assert_allclose(out, (np.clip(array, -991, 500) - clipped_fg.mean()) / clipped_fg.std(), rtol=1e-6)


def test_mr_normalisation_uses_foreground_percentiles():
    rng = np.random.default_rng(0)
    array = rng.gamma(2.0, 100.0, size=10_000).astype(np.float32)
    foreground = array > 50
    out, stats = normalise(array, foreground, "MR", StandardizeParams(), "c")
    lo, hi = np.percentile(array[foreground], [2, 98])
    assert (stats["clip_lo"], stats["clip_hi"]) == pytest.approx((lo, hi))
    assert out[foreground].mean() == pytest.approx(0.0, abs=1e-4) and out[foreground].std() == pytest.approx(1.0, abs=1e-3)


def test_real_mri_template_keeps_its_geometry(tmp_path):
    from nilearn.datasets import load_mni152_template

    template = load_mni152_template(resolution=2)
    path = tmp_path / "mni.nii.gz"
    template.to_filename(path)
    params = StandardizeParams(spacing_mm=(3.0, 3.0, 3.0), margin_mm=6.0)
    meta = standardize_case(CaseSource("mni152", path, None, "MR"), tmp_path / "out", params)
    image = np.load(tmp_path / "out" / "image.npy")
    assert nib.aff2axcodes(template.affine) == ("R", "A", "S")
    # Independent expectation from nibabel: the RAS world box of the head
    # (same threshold rule) plus the margin must be what the crop covers.
    data = np.asarray(template.dataobj, dtype=np.float32)
    lo, hi = np.percentile(data, params.percentiles)
    head = np.argwhere(data > lo + params.foreground_fraction * (hi - lo))
    world = nib.affines.apply_affine(template.affine, head)
    fov_lo = nib.affines.apply_affine(template.affine, (0, 0, 0))
    fov_hi = nib.affines.apply_affine(template.affine, np.array(data.shape) - 1)
    expected_lo = np.maximum(world.min(axis=0) - 6.0, fov_lo)
    expected_hi = np.minimum(world.max(axis=0) + 6.0, fov_hi)
    first = _ras_voxel_to_lps(meta, (0, 0, 0)) * np.array([-1, -1, 1])
    last = _ras_voxel_to_lps(meta, np.array(image.shape) - 1) * np.array([-1, -1, 1])
    # One output voxel (3 mm) plus one input voxel (2 mm) of rounding.
    np.testing.assert_allclose(first, expected_lo, atol=5.0)
    np.testing.assert_allclose(last, expected_hi, atol=5.0)
    # Orientation survives: the left and right hemispheres mirror each other,
    # and the top of the head (high k) is narrower than its middle.
    inside = image > image.min() + 0.5
    assert (inside & inside[::-1]).sum() / inside.sum() > 0.85
    areas = inside.sum(axis=(0, 1))
    assert areas[-len(areas) // 8 :].mean() < areas[len(areas) // 3 : 2 * len(areas) // 3].mean()
    assert meta["original"]["spacing"] == pytest.approx([2.0, 2.0, 2.0])


def test_skip_writes_reason_and_removes_stale_arrays(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "image.npy").write_bytes(b"stale")
    image = make_image(np.zeros((10, 10, 10), np.int16))
    sitk.WriteImage(image, str(tmp_path / "flat.nii.gz"))
    meta = run_standardize(CaseSource("flat", tmp_path / "flat.nii.gz", None, "CT"), out, StandardizeParams(), on_error="skip")
    assert meta["status"] == "skipped" and "constant" in meta["reason"]
    assert not (out / "image.npy").exists()
    assert json.loads((out / "meta.json").read_text())["reason"] == meta["reason"]


def test_fail_mode_exits_with_one_line_reason(tmp_path):
    image = make_image(np.zeros((10, 10, 10), np.int16))
    sitk.WriteImage(image, str(tmp_path / "flat.nii.gz"))
    with pytest.raises(SystemExit, match="case 'flat': image is constant"):
        run_standardize(CaseSource("flat", tmp_path / "flat.nii.gz", None, "CT"), tmp_path / "out", StandardizeParams(), on_error="fail")


@pytest.mark.parametrize("kwargs", [{"spacing_mm": (1.0, 0.0, 1.0)}, {"ct_clip_hu": (5.0, 1.0)}, {"percentiles": (50.0, 10.0)}, {"margin_mm": -1.0}])
def test_params_reject_bad_values(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        StandardizeParams(**kwargs)


def test_unknown_modality_is_a_case_error(sphere_case, tmp_path):
    image_path, _, _, _ = sphere_case
    with pytest.raises(CaseError, match="unknown modality"):
        standardize_case(CaseSource("x", image_path, None, "XR"), tmp_path / "out", StandardizeParams())


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_a_failed_rerun_leaves_no_case_that_looks_complete(sphere_case, tmp_path, on_error):
    image_path, label_path, _, _ = sphere_case
    out = tmp_path / "out"
    assert standardize_case(CaseSource("s", image_path, label_path, "CT"), out, StandardizeParams())["status"] == "ok"
    nan = sitk.GetArrayFromImage(sitk.ReadImage(str(image_path))).astype(np.float32)
    nan[0, 0, 0] = np.nan
    broken = sitk.GetImageFromArray(nan)
    broken.CopyInformation(sitk.ReadImage(str(image_path)))
    sitk.WriteImage(broken, str(tmp_path / "nan.nii.gz"))
    rerun = CaseSource("s", tmp_path / "nan.nii.gz", label_path, "CT")
    if on_error == "fail":
        with pytest.raises(SystemExit, match="NaN"):
            run_standardize(rerun, out, StandardizeParams(), on_error="fail")
        assert sorted(p.name for p in out.iterdir()) == []
    else:
        assert run_standardize(rerun, out, StandardizeParams(), on_error="skip")["status"] == "skipped"
        assert sorted(p.name for p in out.iterdir()) == ["meta.json"]


def test_label_box_crop_keeps_the_labels_plus_the_margin(sphere_case, tmp_path):
    image_path, label_path, _, _ = sphere_case
    params = StandardizeParams(spacing_mm=(2.0, 2.0, 2.0), roi="label_box", label_margin_mm=(4.0, 6.0, 0.0))
    meta = standardize_case(CaseSource("s", image_path, label_path, "CT"), tmp_path / "box", params)
    label = np.load(tmp_path / "box" / "label.npy")
    present = np.argwhere(label > 0)
    lo, hi = present.min(axis=0), present.max(axis=0) + 1
    # 2, 3 and 0 voxels of margin on each side (the sphere lies well inside the scan).
    assert meta["roi"] == "label_box" and lo.tolist() == [2, 3, 0] and (np.array(label.shape) - hi).tolist() == [2, 3, 0]
    body = standardize_case(CaseSource("s", image_path, label_path, "CT"), tmp_path / "body", StandardizeParams(spacing_mm=(2.0, 2.0, 2.0)))
    assert body["roi"] == "body" and all(b > s for b, s in zip(body["shape"], meta["shape"]))
    # The same physical voxels, only less of them: the label box lies inside the body box here.
    offset = np.array([b[0] for b in meta["crop_box"]]) - np.array([b[0] for b in body["crop_box"]])
    body_label = np.load(tmp_path / "body" / "label.npy")
    assert np.array_equal(body_label[tuple(slice(o, o + n) for o, n in zip(offset, label.shape))], label)


def test_label_box_without_labels_falls_back_to_the_body(sphere_case, tmp_path):
    image_path, _, _, _ = sphere_case
    params = StandardizeParams(spacing_mm=(2.0, 2.0, 2.0))
    body = standardize_case(CaseSource("s", image_path, None, "CT"), tmp_path / "body", params)
    boxed = standardize_case(CaseSource("s", image_path, None, "CT"), tmp_path / "box",
                             StandardizeParams(spacing_mm=(2.0, 2.0, 2.0), roi="label_box"))
    assert boxed["roi"] == "body" and boxed["crop_box"] == body["crop_box"]
    assert np.array_equal(np.load(tmp_path / "box" / "image.npy"), np.load(tmp_path / "body" / "image.npy"))


def test_dataset_settings_lay_the_dataset_over_the_section():
    from mass_core.standardize import dataset_settings

    merged = dataset_settings({"spacing": [2, 2, 2], "on_error": "skip"}, {"roi": "label_box", "label_margin_mm": [30, 30, 8]})
    assert merged == {"spacing": [2, 2, 2], "on_error": "skip", "roi": "label_box", "label_margin_mm": [30, 30, 8]}
    with pytest.raises(ValueError, match="roi must be one of"):
        dataset_settings({}, {"roi": "label_bx"})
