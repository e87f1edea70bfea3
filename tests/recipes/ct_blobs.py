"""Tiny CT-like volumes with boxes of known classes, for the release mimics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from volumes import make_image

# Box of voxels (X, Y, Z) as slices.
Box = tuple[slice, slice, slice]


def body_and_label(size: tuple[int, int, int], organs: dict[int, Box]) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y, Z) HU array of a textured body box (20-58 HU, in air) with brighter organs, and its label map."""
    hu = np.full(size, -1000, np.int16)
    # A fixed texture: a constant body is rejected by standardize's intensity checks.
    hu[1:-1, 1:-1, :] = (20 + 2 * (np.indices(size).sum(axis=0) % 20))[1:-1, 1:-1, :]
    label = np.zeros(size, np.uint8)
    for class_id, box in organs.items():
        hu[box] += 10 * class_id
        label[box] = class_id
    return hu, label


def write_volume(array: np.ndarray, path: Path, spacing=(1.5, 1.5, 2.5), direction=None) -> None:
    """Write an (X, Y, Z) array with the given header, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(make_image(array, spacing, direction=direction), str(path))


def write_case(image: Path, label: Path | None, organs: dict[int, Box], size=(20, 20, 12), **header) -> None:
    """One image and (unless ``label`` is None) its label map, same header."""
    hu, classes = body_and_label(size, organs)
    write_volume(hu, image, **header)
    if label is not None:
        write_volume(classes, label, **header)
