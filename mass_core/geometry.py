"""Voxel grids in physical space, and moving arrays between them.

SimpleITK works in LPS physical coordinates (mm). An axis-aligned RAS grid
(array index i -> patient Right, j -> Anterior, k -> Superior) therefore has
the direction matrix ``diag(-1, -1, 1)`` in SimpleITK terms.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk

__all__ = ["RAS_DIRECTION", "Grid", "ras_grid_covering", "resample_to_grid", "to_original_space"]

RAS_DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Grid:
    """Geometry of a 3D image: size (voxels), spacing (mm), origin (mm, LPS), direction (row-major 3x3)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> Grid:
        """The grid of a SimpleITK image."""
        return cls(tuple(image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()), tuple(image.GetDirection()))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Grid:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(int(v) for v in data["size"]), tuple(float(v) for v in data["spacing"]),
                   tuple(float(v) for v in data["origin"]), tuple(float(v) for v in data["direction"]))

    def to_dict(self) -> dict[str, list]:
        """JSON-ready form."""
        return {"size": list(self.size), "spacing": list(self.spacing), "origin": list(self.origin), "direction": list(self.direction)}

    def empty_image(self, pixel_type: int = sitk.sitkUInt8) -> sitk.Image:
        """A zero image on this grid (a reference for resampling)."""
        image = sitk.Image([int(v) for v in self.size], pixel_type)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


def ras_grid_covering(image: sitk.Image, spacing_mm: tuple[float, float, float]) -> Grid:
    """Axis-aligned RAS grid at ``spacing_mm`` covering the voxel centres of ``image``.

    Handles any input direction, oblique included: the grid spans the
    physical bounding box of the image's corner voxel centres.
    """
    size = image.GetSize()
    corners = np.array([image.TransformContinuousIndexToPhysicalPoint([float(c) for c in corner])
                        for corner in itertools.product(*[(0, n - 1) for n in size])])
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    spacing = np.asarray(spacing_mm, dtype=float)
    # Tolerance so that an extent that is an exact multiple of the spacing does
    # not lose its last voxel to floating-point rounding.
    new_size = np.floor((hi - lo) / spacing + 1e-6).astype(int) + 1
    # RAS index axes run towards -x and -y of LPS, so index 0 sits at the
    # largest x and y and the smallest z.
    origin = (float(hi[0]), float(hi[1]), float(lo[2]))
    return Grid(tuple(int(v) for v in new_size), tuple(float(v) for v in spacing), origin, RAS_DIRECTION)


def resample_to_grid(image: sitk.Image, grid: Grid, interpolator: int, pixel_type: int, default_value: float) -> sitk.Image:
    """Resample ``image`` onto ``grid`` (identity transform in physical space)."""
    return sitk.Resample(image, [int(v) for v in grid.size], sitk.Transform(), interpolator, grid.origin,
                         grid.spacing, grid.direction, float(default_value), pixel_type)


def to_original_space(array: np.ndarray, meta: dict[str, Any], interpolator: int = sitk.sitkNearestNeighbor) -> sitk.Image:
    """Map an array on a standardized case's grid back onto the original image grid.

    Args:
        array: (X, Y, Z) array shaped like the case's ``image.npy`` (for
            example a predicted label map).
        meta: the case's ``meta.json`` content.
        interpolator: nearest neighbour for label maps, linear for probabilities.

    Returns:
        a SimpleITK image with the original size, spacing, origin and direction;
        voxels outside the crop box are 0.
    """
    if tuple(array.shape) != tuple(meta["shape"]):
        raise ValueError(f"array shape {array.shape} does not match the case's standardized shape {tuple(meta['shape'])}")
    grid = Grid.from_dict(meta["grid"])
    full = np.zeros(grid.size, dtype=array.dtype)
    full[tuple(slice(lo, hi) for lo, hi in meta["crop_box"])] = array
    image = sitk.GetImageFromArray(np.ascontiguousarray(full.transpose(2, 1, 0)))
    image.SetSpacing(grid.spacing)
    image.SetOrigin(grid.origin)
    image.SetDirection(grid.direction)
    return sitk.Resample(image, Grid.from_dict(meta["original"]).empty_image(), sitk.Transform(), interpolator, 0.0, image.GetPixelID())
