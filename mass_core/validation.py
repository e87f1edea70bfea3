"""Checks that a scan (and its label) can enter the pipeline.

Each check raises :class:`~mass_core.errors.CaseError` with a one-line
reason; the standardize stage turns it into a failure or a skipped case, as
the config says.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from mass_core.errors import CaseError
from mass_core.labels import IGNORE_LABEL, IGNORE_LOOKALIKES

__all__ = ["check_image", "check_label", "image_array"]

# Geometry tolerances: physical positions are compared in mm, directions as
# cosines. Headers written by different tools round differently, so exact
# equality would reject labels that match.
_SPACING_RTOL = 1e-3
_ORIGIN_ATOL_MM = 1e-2
_DIRECTION_ATOL = 1e-3


def image_array(image: sitk.Image) -> np.ndarray:
    """Voxel array of a 3D image in (X, Y, Z) order (SimpleITK gives (Z, Y, X))."""
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def check_image(image: sitk.Image, case_id: str) -> np.ndarray:
    """Validate a scan; return its voxels as float32 (X, Y, Z).

    Raises:
        CaseError: not a single-channel 3D volume, a spatial axis of one
            voxel (a 2D image), non-positive spacing, NaN or infinite voxels,
            or a constant (empty) image.
    """
    dim = image.GetDimension()
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise CaseError(case_id, f"image has {image.GetNumberOfComponentsPerPixel()} components per voxel; expected a single-channel 3D scan")
    if dim == 4:
        raise CaseError(case_id, f"4D image of size {image.GetSize()}; expected a 3D scan (split time series or channels into separate cases)")
    if dim != 3:
        raise CaseError(case_id, f"{dim}D image of size {image.GetSize()}; expected a 3D scan")
    size = image.GetSize()
    if min(size) < 2:
        raise CaseError(case_id, f"image of size {size} is a 2D slice, not a 3D volume")
    spacing = image.GetSpacing()
    if min(spacing) <= 0:
        raise CaseError(case_id, f"non-positive voxel spacing {spacing} mm")
    array = image_array(image).astype(np.float32)
    finite = np.isfinite(array)
    if not finite.all():
        raise CaseError(case_id, f"image has {int((~finite).sum())} NaN or infinite voxels")
    if float(array.max()) == float(array.min()):
        raise CaseError(case_id, f"image is constant (every voxel is {float(array.min()):g}): nothing to learn from")
    return array


def check_label(label: sitk.Image, image: sitk.Image, case_id: str, ignore_label: int | None = None) -> np.ndarray:
    """Validate a label map against its image; return it as an integer (X, Y, Z) array.

    Args:
        ignore_label: the dataset's value for unlabeled voxels; they come back
            as :data:`~mass_core.labels.IGNORE_LABEL` (uint16), never as a class.

    Raises:
        CaseError: size, spacing, origin or direction differ from the image's;
            values are negative or not integers; an undeclared value that
            conventionally means "ignore" (255, 65535) is present.
    """
    if label.GetDimension() != image.GetDimension() or label.GetSize() != image.GetSize():
        raise CaseError(case_id, f"label size {label.GetSize()} does not match image size {image.GetSize()}")
    if not np.allclose(label.GetSpacing(), image.GetSpacing(), rtol=_SPACING_RTOL, atol=0):
        raise CaseError(case_id, f"label spacing {label.GetSpacing()} does not match image spacing {image.GetSpacing()}")
    if not np.allclose(label.GetOrigin(), image.GetOrigin(), rtol=0, atol=_ORIGIN_ATOL_MM):
        raise CaseError(case_id, f"label origin {label.GetOrigin()} does not match image origin {image.GetOrigin()}")
    if not np.allclose(label.GetDirection(), image.GetDirection(), rtol=0, atol=_DIRECTION_ATOL):
        raise CaseError(case_id, "label direction does not match image direction")
    values = image_array(label)
    if not np.issubdtype(values.dtype, np.integer):
        if not np.isfinite(values).all() or not np.array_equal(values, np.round(values)):
            raise CaseError(case_id, "label has non-integer values; expected integer class ids")
    if values.min() < 0:
        raise CaseError(case_id, f"label has negative values (min {values.min()}); expected class ids >= 0")
    max_value = int(values.max())
    if max_value > IGNORE_LABEL:
        raise CaseError(case_id, f"label value {max_value} is too large for a class id")
    for value in IGNORE_LOOKALIKES:
        count = int(np.count_nonzero(values == value)) if value != ignore_label else 0
        if count:
            raise CaseError(case_id, f"label value {value} ({count} voxels) looks like an ignore label, not a class; set "
                                     f"`ignore_label: {value}` for this dataset (mass-core standardize: --ignore-label {value}) "
                                     f"to leave those voxels out of training and scoring")
    if ignore_label is not None and np.any(values == ignore_label):
        # Widened first: written into a uint8 map, IGNORE_LABEL would wrap round to 255.
        return np.where(values == ignore_label, IGNORE_LABEL, values.astype(np.uint16))
    dtype = np.uint8 if max_value <= np.iinfo(np.uint8).max else np.uint16
    return values.astype(dtype)
