"""A tiny autoPET (FDG-PET-CT-Lesions) NIfTI release: patients with dated study folders.

Each study holds CT.nii.gz (fine grid), CTres.nii.gz, PET.nii.gz, SUV.nii.gz
and SEG.nii.gz (the PET grid, twice as coarse, covering the same extent).
Study folder names sort differently from their dates, and one study is a
negative control with an empty mask, as in the release.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

# patient -> study folder names, listed oldest first.
STUDIES = {
    "PETCT_0af7ffe12a": ("08-12-2005-NA-PET-CT Ganzkoerper  primaer mit KM-96698",
                         "03-15-2006-NA-PET-CT Ganzkoerper  primaer mit KM-12345"),
    "PETCT_1285b86bea": ("02-02-2003-NA-PET-CT Ganzkoerper  primaer mit KM-55102",),
    "PETCT_3481507253": ("06-07-2002-NA-Unspecified CT ABDOMEN-18221",),
    "PETCT_86153b2974": ("11-30-2008-NA-PET-CT Ganzkoerper  primaer mit KM-40161",
                         "10-01-2009-NA-PET-CT Ganzkoerper  primaer mit KM-40162",
                         "01-23-2010-NA-PET-CT Ganzkoerper  primaer mit KM-40163"),
    "PETCT_a37da9e85d": ("04-19-2004-NA-PET-CT Ganzkoerper  primaer mit KM-77310",),
    "PETCT_c094a24c03": ("12-24-2007-NA-PET-CT Ganzkoerper  primaer mit KM-61021",),
    "PETCT_f01e83894d": ("09-09-2001-NA-PET-CT Ganzkoerper  primaer mit KM-90233",),
}
NEGATIVE = ("PETCT_1285b86bea", 0)
PET_SIZE_XYZ = (12, 12, 10)
PET_SPACING = (4.0, 4.0, 6.0)
PET_ORIGIN = (-22.0, -22.0, 0.0)


def _image(array_xyz: np.ndarray, spacing: tuple[float, ...], origin: tuple[float, ...]) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.transpose(2, 1, 0)))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def _study(seed: int, negative: bool) -> dict[str, sitk.Image]:
    rng = np.random.default_rng(seed)
    body = np.zeros(PET_SIZE_XYZ, bool)
    body[2:-2, 3:-2, 1:-1] = True
    seg = np.zeros(PET_SIZE_XYZ, np.uint8)
    if not negative:
        x, y, z = (int(v) for v in rng.integers((3, 4, 2), (8, 8, 7)))
        seg[x : x + 2, y : y + 2, z : z + 2] = 1
    suv = np.where(body, rng.normal(1.0, 0.1, PET_SIZE_XYZ), 0.0) + 7.0 * seg
    ct_spacing = tuple(s / 2 for s in PET_SPACING)
    ct_origin = tuple(o - s / 4 for o, s in zip(PET_ORIGIN, PET_SPACING))  # CT voxels tile the PET voxels 2x2x2
    fine = np.kron(body.astype(np.int16), np.ones((2, 2, 2), np.int16))
    ct = _image(np.where(fine > 0, 40, -1000).astype(np.int16), ct_spacing, ct_origin)
    return {
        "CT.nii.gz": ct,
        "CTres.nii.gz": sitk.Resample(ct, _image(seg, PET_SPACING, PET_ORIGIN), sitk.Transform(), sitk.sitkLinear, -1000.0),
        "PET.nii.gz": _image((suv * 5000).astype(np.float32), PET_SPACING, PET_ORIGIN),
        "SUV.nii.gz": _image(suv.astype(np.float32), PET_SPACING, PET_ORIGIN),
        "SEG.nii.gz": _image(seg, PET_SPACING, PET_ORIGIN),
    }


def write(root: Path) -> None:
    """Write ``PETCT_*/<study>/`` folders under ``root``."""
    seed = 0
    for patient, studies in STUDIES.items():
        for index, study in enumerate(studies):
            folder = root / patient / study
            folder.mkdir(parents=True)
            for name, image in _study(seed, (patient, index) == NEGATIVE).items():
                sitk.WriteImage(image, str(folder / name))
            seed += 1
