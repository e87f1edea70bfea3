from __future__ import annotations

from pathlib import Path

import pytest
import SimpleITK as sitk

from volumes import sphere_phantom


@pytest.fixture
def sphere_case(tmp_path: Path):
    """A sphere phantom written as NIfTI; yields (image_path, label_path, centre_lps_mm, radius_mm)."""
    image, label, centre = sphere_phantom()
    sitk.WriteImage(image, str(tmp_path / "img.nii.gz"))
    sitk.WriteImage(label, str(tmp_path / "lab.nii.gz"))
    return tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz", centre, 9.0
