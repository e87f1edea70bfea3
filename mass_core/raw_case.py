"""Reading one raw case as its :class:`~mass_core.datasets.CaseSource` describes it.

Plain datasets give an image file and a label file. The public releases
behind the recipes (:mod:`mass_core.recipes`) need more: a time frame of a
4D file, per-structure masks merged into one label map, headers replaced
where the release's are wrong, renumbered label values, a label stored on
another grid. Every step here works on SimpleITK images, so that the
standardize stage validates and resamples the result like any other case.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from mass_core.datasets import CaseSource
from mass_core.errors import CaseError
from mass_core.imageio import read_image

__all__ = ["read_case", "read_crop_images"]


def read_case(case: CaseSource) -> tuple[sitk.Image, sitk.Image | None]:
    """The case's image and label (``None`` if unlabeled), with the case's fixes applied.

    Raises:
        CaseError: a file is unreadable, a frame is missing or its label
            frame is empty, a part's grid differs from the first part's, or a
            label value has no class id.
    """
    image = _fixed_header(_frame(read_image(case.image, case.case_id), case), case)
    if case.label_parts:
        label = _merge_parts(case)
    elif case.label is not None:
        label = read_image(case.label, case.case_id)
    else:
        return image, None
    label = _fixed_header(_frame(label, case), case)
    if case.frame is not None and not sitk.GetArrayViewFromImage(label).any():
        # A recipe picks the labeled frames from the release's table: an empty frame means the two disagree.
        raise CaseError(case.case_id, f"frame {case.frame} of the label holds no labeled voxel; "
                                      "the release's frame table and its label file disagree")
    if case.label_values:
        label = _renumbered(label, case)
    if case.label_on_other_grid:
        # Nearest neighbour keeps class ids; voxels outside the label's grid are background.
        label = sitk.Resample(label, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, label.GetPixelID())
    return image, label


def read_crop_images(case: CaseSource) -> list[sitk.Image]:
    """The case's ``crop_with`` images, framed and header-fixed like its image.

    Raises:
        CaseError: a file is unreadable or a frame is missing.
    """
    return [_fixed_header(_frame(read_image(path, case.case_id), case), case) for path in case.crop_with]


def _frame(image: sitk.Image, case: CaseSource) -> sitk.Image:
    if case.frame is None:
        return image
    if image.GetDimension() != 4:
        raise CaseError(case.case_id, f"frame {case.frame} asked for, but the image is {image.GetDimension()}D, not 4D")
    frames = image.GetSize()[3]
    if case.frame >= frames:
        raise CaseError(case.case_id, f"frame {case.frame} asked for, but the file has {frames} time frames")
    return image[:, :, :, case.frame]


def _fixed_header(image: sitk.Image, case: CaseSource) -> sitk.Image:
    if case.direction is not None:
        image.SetDirection(case.direction)
    if case.spacing is not None:
        image.SetSpacing(case.spacing)
    return image


def _merge_parts(case: CaseSource) -> sitk.Image:
    """One label map from binary masks; where masks overlap, the later class id wins."""
    merged: np.ndarray | None = None
    reference: sitk.Image | None = None
    for class_id, path in case.label_parts:
        part = read_image(path, case.case_id)
        if reference is None:
            reference = part
            merged = np.zeros(part.GetSize()[::-1], dtype=np.uint16)
        elif part.GetSize() != reference.GetSize() or not np.allclose(part.GetSpacing(), reference.GetSpacing(), rtol=1e-4):
            raise CaseError(case.case_id, f"mask {path.name} has size {part.GetSize()} and spacing {part.GetSpacing()}, "
                                          f"unlike {case.label_parts[0][1].name} ({reference.GetSize()}, {reference.GetSpacing()})")
        merged[sitk.GetArrayViewFromImage(part) > 0] = class_id
    label = sitk.GetImageFromArray(merged)
    label.CopyInformation(reference)
    return label


def _renumbered(label: sitk.Image, case: CaseSource) -> sitk.Image:
    values = sitk.GetArrayFromImage(label)
    mapping = dict(case.label_values)
    unknown = sorted(set(np.unique(values).tolist()) - set(mapping) - {0})
    if unknown:
        raise CaseError(case.case_id, f"label values {unknown} have no class id (expected only {sorted(mapping)} and 0)")
    lookup = np.zeros(int(values.max()) + 1, dtype=np.uint16)
    for value, class_id in mapping.items():
        if value < lookup.size:
            lookup[value] = class_id
    renumbered = sitk.GetImageFromArray(lookup[values.astype(np.int64)])
    renumbered.CopyInformation(label)
    return renumbered
