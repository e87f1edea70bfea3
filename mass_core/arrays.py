"""Array operations shared by the stages: padded crops, bounding boxes and the largest connected component."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from monai.transforms.utils import generate_spatial_bounding_box
from scipy import ndimage

__all__ = ["bounding_box", "crop_padded", "largest_component"]


def crop_padded(array: Any, start: Sequence[int], size: Sequence[int], pad_value: float = 0) -> np.ndarray | None:
    """Copy a box of the last three axes of ``array``, padded with ``pad_value`` where the box leaves it.

    Only the part of the box inside ``array`` is read, so a memory-mapped
    volume is not loaded whole. MONAI's ``SpatialCrop`` + ``SpatialPad`` take
    0.4-0.9 ms per 32^3-64^3 crop of a 200^3 volume (16 ms for a padded 64^3
    crop of a tensor) against 0.05-0.1 ms for this slice + ``np.pad``.

    Args:
        array: ``(..., X, Y, Z)`` array-like with ``shape`` and basic slicing;
            leading axes are read whole.
        start: first voxel per spatial axis; may be negative.
        size: crop size per spatial axis in voxels.
        pad_value: value of the voxels outside ``array``.

    Returns:
        ``(..., *size)`` array of ``array``'s dtype, or ``None`` when the box
        and the array do not overlap.
    """
    spatial = tuple(array.shape[-3:])
    lo = [min(max(int(s), 0), dim) for s, dim in zip(start, spatial)]
    hi = [max(min(int(s) + int(n), dim), 0) for s, n, dim in zip(start, size, spatial)]
    if any(h <= low for low, h in zip(lo, hi)):
        return None
    lead = (slice(None),) * (len(array.shape) - 3)
    block = np.asarray(array[lead + tuple(slice(low, h) for low, h in zip(lo, hi))])
    widths = [(0, 0)] * len(lead) + [(low - int(s), int(s) + int(n) - h) for low, h, s, n in zip(lo, hi, start, size)]
    # np.pad copies even with zero widths: the crop never aliases a (read-only) memory map.
    return np.pad(block, widths, constant_values=pad_value)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of a boolean ``mask``; among equal sizes the first in C order.

    MONAI's ``get_largest_connected_component_mask(connectivity=1)`` takes
    62 ms against 52 ms here on a 160x192x192 mask, and keeps the last of
    equally large components, which would change the phantom volumes.

    Returns:
        bool array of ``mask``'s shape; ``mask`` itself when it has at most one component.
    """
    components, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(sizes.argmax())


def bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box (one slice per axis) holding every True voxel of ``mask``; empty at the origin when none."""
    start, end = generate_spatial_bounding_box(mask[None], allow_smaller=True)
    return tuple(slice(int(lo), int(hi)) for lo, hi in zip(start, end))
