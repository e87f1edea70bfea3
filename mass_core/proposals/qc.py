"""QC pictures: proposal boundaries over the image, three orientations, one row per scale.

Figures are drawn without pyplot (matplotlib's Agg canvas), so nothing needs
a display and no global backend state is touched.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from skimage.segmentation import find_boundaries

from mass_core.atomic import atomic_path

__all__ = ["write_overlay", "write_placeholder"]

_VIEWS = (("axial", 2), ("coronal", 1), ("sagittal", 0))


def _plane(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    # Rows run along the remaining axis that points up (S for coronal and
    # sagittal, A for axial), so the picture is upright with origin="lower".
    plane = np.take(volume, index, axis=axis)
    return plane.T


def write_overlay(
    image: np.ndarray,
    label_maps: np.ndarray,
    out_png: str | os.PathLike,
    *,
    spacing: Sequence[float],
    title: str,
    scale_names: Sequence[str] | None = None,
    center: Sequence[int] | None = None,
) -> None:
    """Save a PNG: per scale (rows) the proposals on an axial, coronal and sagittal slice.

    Args:
        image: float (X, Y, Z), RAS.
        label_maps: int (S, X, Y, Z).
        out_png: written atomically.
        spacing: voxel spacing (X, Y, Z) in mm (sets the aspect ratio).
        title: figure title, e.g. the case id.
        scale_names: one caption per scale.
        center: voxel (X, Y, Z) the slices pass through; default the centre of
            the proposals' bounding box.

    Slices are shown with the patient's right on the left (radiological
    convention) for axial and coronal views.
    """
    n_scales = label_maps.shape[0]
    if center is None:
        present = np.argwhere(label_maps.any(axis=0)) if n_scales else np.zeros((0, 3))
        center = present.mean(axis=0).round().astype(int) if present.size else np.array(image.shape) // 2
    names = scale_names or [f"scale {s}" for s in range(n_scales)]
    lo, hi = np.percentile(image, [1, 99])
    rng = np.random.default_rng(0)
    rows = max(n_scales, 1)
    fig = Figure(figsize=(9, 3 * rows))
    axes = fig.subplots(rows, 3, squeeze=False)
    for s in range(rows):
        if n_scales:
            n = int(label_maps[s].max())
            colours = np.concatenate([[[0, 0, 0, 0]], np.c_[rng.uniform(0.2, 1, (n, 3)), np.full(n, 0.35)]])
        for col, (view, axis) in enumerate(_VIEWS):
            ax = axes[s, col]
            plane_axes = [a for a in range(3) if a != axis]
            aspect = spacing[plane_axes[1]] / spacing[plane_axes[0]]
            ax.imshow(_plane(image, axis, center[axis]), cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspect)
            if n_scales:
                labels = _plane(label_maps[s], axis, center[axis])
                ax.imshow(colours[labels], origin="lower", aspect=aspect, interpolation="nearest")
                ax.contour(find_boundaries(labels, mode="inner"), levels=[0.5], colors="yellow", linewidths=0.4)
            if axis != 0:
                ax.invert_xaxis()
            ax.set_xticks([])
            ax.set_yticks([])
            if s == 0:
                ax.set_title(f"{view} {'xyz'[axis]}={center[axis]}", fontsize=8)
            if col == 0:
                ax.set_ylabel(names[s] if n_scales else "no proposals", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100)


def write_placeholder(out_png: str | os.PathLike, text: str) -> None:
    """Save a PNG that only says ``text``: the QC picture of a case without proposals."""
    fig = Figure(figsize=(6, 2))
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=9)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100)
