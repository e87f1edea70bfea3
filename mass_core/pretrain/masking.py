"""Random patch masks for masked image modelling."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["patch_mask"]


def patch_mask(rng: np.random.Generator, size: Sequence[int], patch: int, ratio: float) -> np.ndarray:
    """A voxel mask hiding ``round(ratio * n)`` of the ``n`` cubic patches of a crop.

    Exactly that many patches are hidden (not each with probability
    ``ratio``), so that every sample carries the same amount of signal.

    Args:
        rng: the sample's generator.
        size: crop size ``(X, Y, Z)`` in voxels, each a multiple of ``patch``.
        patch: patch edge in voxels.
        ratio: share of patches hidden, in ``(0, 1)``.

    Returns:
        bool ``(X, Y, Z)``, True where hidden.

    Example:
        >>> patch_mask(np.random.default_rng(0), (8, 8, 8), 4, 0.5).mean()
        0.5
    """
    if not 0 < ratio < 1:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    if patch < 1 or any(int(s) % patch for s in size):
        raise ValueError(f"crop size {tuple(size)} must be a multiple of patch {patch} in every axis")
    grid = tuple(int(s) // patch for s in size)
    count = int(np.prod(grid))
    hidden = np.zeros(count, dtype=bool)
    hidden[rng.choice(count, size=max(1, int(round(ratio * count))), replace=False)] = True
    hidden = hidden.reshape(grid)
    for axis in range(3):
        hidden = np.repeat(hidden, patch, axis=axis)
    return hidden
