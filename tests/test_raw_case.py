"""read_case: the fixes a CaseSource describes, each checked against a hand-made volume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mass_core.datasets import CaseSource
from mass_core.errors import CaseError
from mass_core.raw_case import read_case
from volumes import make_image


def _write(image: sitk.Image, path: Path) -> Path:
    sitk.WriteImage(image, str(path))
    return path


def _array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def test_plain_case_reads_image_and_label_unchanged(tmp_path):
    values = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    image = _write(make_image(values, (1, 2, 3)), tmp_path / "i.nii.gz")
    label = _write(make_image((values % 3).astype(np.uint8), (1, 2, 3)), tmp_path / "l.nii.gz")
    got_image, got_label = read_case(CaseSource("a", image, label, "CT"))
    np.testing.assert_array_equal(_array(got_image), values)
    np.testing.assert_array_equal(_array(got_label), values % 3)
    assert read_case(CaseSource("a", image, None, "CT"))[1] is None


def test_frame_of_a_4d_file(tmp_path):
    frames = np.stack([np.full((4, 5, 6), t, np.int16) for t in range(3)])  # (T, X, Y, Z)
    image = sitk.JoinSeries([make_image(f) for f in frames])
    path = _write(image, tmp_path / "cine.nii.gz")
    got, _ = read_case(CaseSource("a_2", path, None, "MR", frame=2))
    assert got.GetDimension() == 3
    np.testing.assert_array_equal(_array(got), frames[2])
    with pytest.raises(CaseError, match="frame 3 asked for, but the file has 3 time frames"):
        read_case(CaseSource("a_3", path, None, "MR", frame=3))


def test_parts_merge_into_one_label_map_later_class_wins(tmp_path):
    shape = (6, 6, 6)
    image = _write(make_image(np.zeros(shape, np.int16)), tmp_path / "ct.nii.gz")
    first, second = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    first[:3] = 1
    second[2:4] = 1
    parts = ((4, _write(make_image(first), tmp_path / "liver.nii.gz")), (7, _write(make_image(second), tmp_path / "aorta.nii.gz")))
    _, label = read_case(CaseSource("s1", image, None, "CT", label_parts=parts))
    expected = np.zeros(shape, np.uint16)
    expected[:2], expected[2:4] = 4, 7
    np.testing.assert_array_equal(_array(label), expected)


def test_header_fix_and_renumbering(tmp_path):
    values = np.zeros((4, 4, 4), np.uint8)
    values[0, 0, 0], values[1, 1, 1], values[2, 2, 2] = 1, 2, 4
    direction = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    image = _write(make_image(values.astype(np.int16)), tmp_path / "i.nii.gz")
    label = _write(make_image(values), tmp_path / "l.nii.gz")
    case = CaseSource("b", image, label, "MR", direction=direction, spacing=(0.7, 0.7, 2.5), label_values=((1, 1), (2, 2), (4, 3)))
    got_image, got_label = read_case(case)
    for got in (got_image, got_label):
        assert got.GetDirection() == direction
        assert got.GetSpacing() == (0.7, 0.7, 2.5)
    assert _array(got_label)[2, 2, 2] == 3 and _array(got_label)[1, 1, 1] == 2
    with pytest.raises(CaseError, match=r"label values \[4\] have no class id"):
        read_case(CaseSource("b", image, label, "MR", label_values=((1, 1), (2, 2))))


def test_label_on_another_grid_is_resampled_onto_the_image(tmp_path):
    # Image at 1 mm, label at 2 mm over the same extent: a 2 mm label voxel covers 2x2x2 image voxels.
    image = _write(make_image(np.zeros((8, 8, 8), np.int16), (1, 1, 1), origin=(0.5, 0.5, 0.5)), tmp_path / "ct.nii.gz")
    coarse = np.zeros((4, 4, 4), np.uint8)
    coarse[1, 2, 3] = 1
    label = _write(make_image(coarse, (2, 2, 2), origin=(1.0, 1.0, 1.0)), tmp_path / "seg.nii.gz")
    _, got = read_case(CaseSource("p_0", image, label, "CT", label_on_other_grid=True))
    assert got.GetSize() == (8, 8, 8)
    expected = np.zeros((8, 8, 8), np.uint8)
    expected[2:4, 4:6, 6:8] = 1
    np.testing.assert_array_equal(_array(got), expected)
