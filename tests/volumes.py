"""Synthetic volumes with known geometry, shared by the tests."""

from __future__ import annotations


import numpy as np
import SimpleITK as sitk

# An LPS-stored scan whose axes are permuted and flipped relative to RAS, with
# anisotropic spacing: the hardest ordinary case for reorientation.
OBLIQUE_FREE_DIRECTION = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def make_image(array_xyz: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None) -> sitk.Image:
    """A SimpleITK image from an (X, Y, Z) array."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array_xyz).transpose(2, 1, 0)))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    if direction is not None:
        image.SetDirection(direction)
    return image


def physical_coordinates(image: sitk.Image) -> np.ndarray:
    """(X, Y, Z, 3) LPS coordinates of every voxel centre, computed with numpy only."""
    size = image.GetSize()
    index = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), axis=-1).astype(float)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    return np.asarray(image.GetOrigin()) + (index * np.asarray(image.GetSpacing())) @ direction.T


def sphere_phantom(size=(48, 40, 30), spacing=(1.1, 0.9, 2.4), origin=(12.0, -30.0, 40.0),
                   direction=OBLIQUE_FREE_DIRECTION, centre_offset_mm=(4.0, -3.0, 5.0), radius_mm=9.0):
    """A CT-like body box holding a bright sphere at a known physical centre.

    Returns (image, label, centre_lps_mm).
    """
    reference = make_image(np.zeros(size, np.int16), spacing, origin, direction)
    coords = physical_coordinates(reference)
    middle = coords.reshape(-1, 3).mean(axis=0)
    centre = middle + np.asarray(centre_offset_mm)
    inside = np.linalg.norm(coords - centre, axis=-1) <= radius_mm
    body = np.zeros(size, bool)
    body[4:-4, 4:-4, 2:-2] = True
    hu = np.where(body, 40, -1000).astype(np.int16)
    hu[inside] = 200
    image = make_image(hu, spacing, origin, direction)
    label = make_image(inside.astype(np.uint8), spacing, origin, direction)
    return image, label, centre
