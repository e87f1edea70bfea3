"""Slice-wise supervoxels: scikit-image's 2D Felzenszwalb per slice, linked into 3D.

scikit-image's ``felzenszwalb`` is 2D only (a 3D array is taken for a colour
image unless ``channel_axis=None``, which then raises), so each slice is
segmented on its own and superpixels of neighbouring slices are joined when
they overlap enough. Two linking rules:

``"iou"``
    link when the intersection over union reaches ``link_threshold``.
``"overlap"``
    link when the intersection exceeds ``link_threshold`` of the smaller
    superpixel. A small superpixel inside a large one always links, so chains
    of such links glue most of the volume into one segment; kept for
    comparison (see ``docs/proposals.md``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph
from skimage.segmentation import felzenszwalb

from mass_core.proposals.labels import pair_counts

__all__ = ["LINKS", "segment_slices"]

LINKS = ("iou", "overlap")


def _slice_min_size(min_size_vox: float) -> int:
    # The cross-section of a cube of the 3D minimum size: a 2D minimum that
    # neither keeps specks nor swallows thin structures' cross-sections.
    return max(1, int(round(min_size_vox ** (2 / 3))))


def segment_slices(
    image: np.ndarray,
    spacing: tuple[float, float, float],
    scale_mm3: float,
    *,
    sigma_mm: float = 1.0,
    min_size_mm3: float = 0.0,
    axis: int = 2,
    link: str = "iou",
    link_threshold: float = 0.5,
    foreground: np.ndarray | None = None,
) -> np.ndarray:
    """Segment ``image`` (X, Y, Z) slice by slice along ``axis`` and link the superpixels in 3D.

    Args:
        image: float (X, Y, Z).
        spacing: voxel spacing (X, Y, Z) in mm.
        scale_mm3: Felzenszwalb's ``k`` in (intensity unit x mm^3), as in
            :func:`mass_core.proposals.felzenszwalb3d.segment_scales`: a
            superpixel of A pixels counts as A voxels.
        sigma_mm: Gaussian smoothing in mm (in-plane, as scikit-image does it).
        min_size_mm3: 3D minimum size; per slice the cross-section of a cube of
            that volume is used.
        axis: slicing axis (2 = axial for RAS arrays).
        link: ``"iou"`` or ``"overlap"`` (module docstring).
        link_threshold: threshold of the linking rule, in (0, 1].
        foreground: bool (X, Y, Z); other voxels get label 0.

    Returns:
        int32 (X, Y, Z): 3D segments labelled ``1..n``, 0 outside the foreground.
    """
    if image.ndim != 3:
        raise ValueError(f"image must be 3D (X, Y, Z), got shape {image.shape}")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    if link not in LINKS:
        raise ValueError(f"link must be one of {LINKS}, got {link!r}")
    if not 0 < link_threshold <= 1:
        raise ValueError(f"link_threshold must be in (0, 1], got {link_threshold}")
    if scale_mm3 < 0:
        raise ValueError(f"scale_mm3 must be >= 0, got {scale_mm3}")
    voxel_mm3 = float(np.prod(spacing))
    in_plane = [s for a, s in enumerate(spacing) if a != axis]
    planes = np.moveaxis(np.asarray(image, np.float32), axis, 0)
    inside = np.ones(planes.shape, bool) if foreground is None else np.moveaxis(foreground, axis, 0)
    labels = np.zeros(planes.shape, np.int64)
    offset = 0
    for i, plane in enumerate(planes):
        # scikit-image divides scale by 255 (its reference works on 0..255).
        seg = felzenszwalb(
            plane,
            scale=255.0 * scale_mm3 / voxel_mm3,
            sigma=sigma_mm / math.sqrt(in_plane[0] * in_plane[1]),
            min_size=_slice_min_size(min_size_mm3 / voxel_mm3),
            channel_axis=None,
        ).astype(np.int64)
        seg = np.where(inside[i], seg + 1 + offset, 0)
        labels[i] = seg
        offset = max(offset, int(seg.max()))
    sizes = np.bincount(labels.ravel(), minlength=offset + 1)
    links_a, links_b = [], []
    for i in range(len(planes) - 1):
        pairs = pair_counts(labels[i], labels[i + 1])
        size_a, size_b = sizes[pairs.a], sizes[pairs.b]
        if link == "iou":
            score = pairs.count / (size_a + size_b - pairs.count)
            linked = score >= link_threshold
        else:
            linked = pairs.count > link_threshold * np.minimum(size_a, size_b)
        links_a.append(pairs.a[linked])
        links_b.append(pairs.b[linked])
    a = np.concatenate(links_a) if links_a else np.zeros(0, np.int64)
    b = np.concatenate(links_b) if links_b else np.zeros(0, np.int64)
    graph = sparse.coo_matrix((np.ones(a.size, np.int8), (a, b)), shape=(offset + 1, offset + 1))
    _, component = csgraph.connected_components(graph, directed=False)
    # Renumber the components that hold foreground 1..n; 0 stays background.
    used = np.unique(component[labels[labels > 0]])
    lut = np.zeros(component.max() + 1, np.int32)
    lut[used] = np.arange(1, used.size + 1, dtype=np.int32)
    out = np.where(labels > 0, lut[component[labels]], 0).astype(np.int32)
    return np.ascontiguousarray(np.moveaxis(out, 0, axis))
