"""Multi-scale proposal generation for one volume: segment, filter, deduplicate.

Per case: restrict to the body (foreground), segment at several scales (3D
Felzenszwalb or slice-wise supervoxels), drop segments outside
``[min_volume_mm3, max_volume_mm3]``, drop near-duplicates across scales
(3D IoU, largest first, as the MASS paper's NMS) and renumber. The result is
one label map per scale plus the proposal table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from mass_core.arrays import bounding_box, largest_component
from mass_core.config_section import from_section
from mass_core.errors import CaseError
from mass_core.proposals.felzenszwalb3d import CONNECTIVITIES, build_graph, segment_scales
from mass_core.proposals.labels import label_dtype, pair_counts
from mass_core.proposals.slicewise import LINKS, segment_slices
from mass_core.proposals.store import ProposalSet

__all__ = ["GENERATORS", "ProposalParams", "body_mask", "check_volume", "deduplicate", "generate_proposals"]

GENERATORS = ("fh3d", "slicewise")


@dataclass(frozen=True)
class ProposalParams:
    """Settings of the propose stage (config key ``proposals``).

    Args:
        generator: ``"fh3d"`` (3D Felzenszwalb on the voxel graph) or
            ``"slicewise"`` (scikit-image per slice, linked in 3D).
        scales_mm3: Felzenszwalb ``k`` per scale, in (z-score x mm^3); larger
            gives larger segments. One label map per scale.
        sigma_mm: Gaussian smoothing before segmenting, in mm.
        connectivity: 6 or 26 (``fh3d``).
        hierarchical: each scale merges the previous scale's segments further,
            so proposals nest (``fh3d`` only).
        slice_axis: slicing axis of ``slicewise`` (2 = axial).
        link: ``slicewise`` linking rule, ``"iou"`` or ``"overlap"``.
        link_threshold: threshold of that rule.
        min_volume_mm3: smaller segments are merged into a neighbour (fh3d) and
            never become proposals.
        max_volume_mm3: larger segments (e.g. the whole body) are dropped.
        dedup_iou: a proposal whose 3D IoU with a larger kept one (of another
            scale) reaches this is dropped; 1 keeps only exact duplicates apart.
        restrict_to_foreground: segment only the body (largest connected
            component above ``foreground_threshold``, holes filled per slice).
        foreground_threshold: body threshold in image units; None = Otsu's.
        min_foreground_mm3: a case with a smaller body is rejected as
            all-background.
        min_shape: a case smaller than this along any axis (voxels, X, Y, Z),
            typically the training crop, is rejected; (0, 0, 0) disables.
    """

    generator: str = "fh3d"
    scales_mm3: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    sigma_mm: float = 1.5
    connectivity: int = 6
    hierarchical: bool = False
    slice_axis: int = 2
    link: str = "iou"
    link_threshold: float = 0.5
    min_volume_mm3: float = 1000.0
    max_volume_mm3: float = 3.0e6
    dedup_iou: float = 0.95
    restrict_to_foreground: bool = True
    foreground_threshold: float | None = None
    min_foreground_mm3: float = 1.0e4
    min_shape: tuple[int, int, int] = (0, 0, 0)

    # Read by the stage (on_error) and by the recall table (recall), not by the generator.
    OUTSIDE_KEYS = ("on_error", "recall")

    def __post_init__(self) -> None:
        if self.generator not in GENERATORS:
            raise ValueError(f"generator must be one of {GENERATORS}, got {self.generator!r}")
        if not self.scales_mm3 or min(self.scales_mm3) < 0:
            raise ValueError(f"scales_mm3 must be a non-empty list of numbers >= 0, got {self.scales_mm3}")
        if self.sigma_mm < 0:
            raise ValueError(f"sigma_mm must be >= 0, got {self.sigma_mm}")
        if self.connectivity not in CONNECTIVITIES:
            raise ValueError(f"connectivity must be one of {CONNECTIVITIES}, got {self.connectivity}")
        if self.hierarchical and self.generator != "fh3d":
            raise ValueError("hierarchical needs generator 'fh3d'")
        if self.hierarchical and list(self.scales_mm3) != sorted(self.scales_mm3):
            raise ValueError(f"scales_mm3 must increase when hierarchical is set, got {self.scales_mm3}")
        if self.slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {self.slice_axis}")
        if self.link not in LINKS:
            raise ValueError(f"link must be one of {LINKS}, got {self.link!r}")
        if not 0 < self.link_threshold <= 1:
            raise ValueError(f"link_threshold must be in (0, 1], got {self.link_threshold}")
        if not 0 <= self.min_volume_mm3 < self.max_volume_mm3:
            raise ValueError(
                f"min_volume_mm3 and max_volume_mm3 must satisfy 0 <= min < max, "
                f"got {self.min_volume_mm3} and {self.max_volume_mm3}"
            )
        if not 0 < self.dedup_iou <= 1:
            raise ValueError(f"dedup_iou must be in (0, 1], got {self.dedup_iou}")
        if self.min_foreground_mm3 < 0:
            raise ValueError(f"min_foreground_mm3 must be >= 0, got {self.min_foreground_mm3}")
        if len(self.min_shape) != 3 or min(self.min_shape) < 0:
            raise ValueError(f"min_shape must be three integers >= 0, got {self.min_shape}")

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> ProposalParams:
        """Build from the config's ``proposals`` section; unknown keys raise ``ValueError``, lists become tuples."""
        return from_section(cls, section, "proposals")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def body_mask(image: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """The body: largest connected component above ``threshold``, holes filled per axial slice.

    Holes are filled slice by slice because lungs and bowel gas reach the
    outside in 3D (airways) but are enclosed in an axial slice.

    Args:
        image: float (X, Y, Z).
        threshold: in image units; None uses Otsu's threshold (air vs tissue).

    Returns:
        bool (X, Y, Z).
    """
    if threshold is None:
        # A stride-2 subsample gives the same histogram at an eighth of the cost.
        threshold = float(threshold_otsu(image[::2, ::2, ::2].ravel()))
    mask = image > threshold
    mask = largest_component(mask)
    # Background components within each axial slice (no links along Z); those
    # that do not touch the slice's border are holes.
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[:, :, 1] = ndimage.generate_binary_structure(2, 1)
    outside, n_outside = ndimage.label(~mask, structure=in_plane)
    reaches_border = np.zeros(n_outside + 1, bool)
    reaches_border[outside[[0, -1]]] = True
    reaches_border[outside[:, [0, -1]]] = True
    return mask | ~reaches_border[outside]


def deduplicate(label_maps: np.ndarray, voxels: list[np.ndarray], iou: float) -> list[np.ndarray]:
    """Greedy 3D-IoU suppression across scales, largest proposal first.

    Proposals of one scale are disjoint, so only pairs from different scales
    can be near-duplicates; their overlaps come from one contingency table
    per pair of scales.

    Args:
        label_maps: int (S, X, Y, Z).
        voxels: per scale, int64 (n_s + 1,) voxel counts (index 0 unused);
            a count of 0 marks a label already dropped.
        iou: suppression threshold.

    Returns:
        per scale, bool (n_s + 1,): which labels to keep.
    """
    n_scales = len(voxels)
    base = np.concatenate([[0], np.cumsum([v.size for v in voxels])])
    size = np.concatenate(voxels)
    conflicts: list[tuple[np.ndarray, np.ndarray]] = []
    for s in range(n_scales):
        for t in range(s + 1, n_scales):
            pairs = pair_counts(label_maps[s], label_maps[t])
            a, b = base[s] + pairs.a, base[t] + pairs.b
            valid = (size[a] > 0) & (size[b] > 0)
            a, b, count = a[valid], b[valid], pairs.count[valid]
            close = count / (size[a] + size[b] - count) >= iou
            conflicts.append((a[close], b[close]))
    keep = size > 0
    keep[base[:-1]] = False
    partners: dict[int, list[int]] = {}
    for a, b in conflicts:
        for i, j in zip(a.tolist(), b.tolist()):
            partners.setdefault(i, []).append(j)
            partners.setdefault(j, []).append(i)
    # Largest first; ties go to the finer (earlier) scale, then the lower label.
    for node in sorted(partners, key=lambda n: (-size[n], n)):
        if keep[node]:
            for other in partners[node]:
                keep[other] = False
    return [keep[base[s] : base[s + 1]] for s in range(n_scales)]


def _segment(
    image: np.ndarray, spacing: tuple[float, float, float], fg: np.ndarray | None, p: ProposalParams
) -> np.ndarray:
    if p.generator == "fh3d":
        graph = build_graph(image, spacing, sigma_mm=p.sigma_mm, connectivity=p.connectivity, foreground=fg)
        return segment_scales(graph, p.scales_mm3, min_size_mm3=p.min_volume_mm3, hierarchical=p.hierarchical)
    return np.stack(
        [
            segment_slices(
                image,
                spacing,
                k,
                sigma_mm=p.sigma_mm,
                min_size_mm3=p.min_volume_mm3,
                axis=p.slice_axis,
                link=p.link,
                link_threshold=p.link_threshold,
                foreground=fg,
            )
            for k in p.scales_mm3
        ]
    )


def check_volume(image: np.ndarray, case_id: str, min_shape: tuple[int, int, int] = (0, 0, 0)) -> None:
    """Raise :class:`CaseError` for volumes no proposal can come from (not 3D, not finite, constant, too small)."""
    if image.ndim != 3:
        raise CaseError(case_id, f"image must be 3D (X, Y, Z), got shape {image.shape}")
    if any(n < m for n, m in zip(image.shape, min_shape)):
        raise CaseError(case_id, f"volume {image.shape} is smaller than the crop {tuple(min_shape)} along some axis")
    if not np.isfinite(image).all():
        raise CaseError(case_id, "image has NaN or infinite voxels")
    if float(image.max()) - float(image.min()) <= 1e-6 * max(1.0, abs(float(image.max()))):
        raise CaseError(case_id, f"image is constant ({float(image.min()):g}): nothing to segment")


def generate_proposals(
    image: np.ndarray, spacing: tuple[float, float, float], params: ProposalParams, case_id: str
) -> ProposalSet:
    """Class-agnostic 3D mask proposals of one volume.

    Args:
        image: float (X, Y, Z), z-scored (scales are in z-score x mm^3).
        spacing: voxel spacing (X, Y, Z) in mm.
        params: see :class:`ProposalParams`.
        case_id: named in errors.

    Returns:
        a :class:`ProposalSet` with one label map per scale.

    Raises:
        CaseError: constant, non-finite or too small volume, no foreground
            (all background), or no segment survives the filters.
    """
    check_volume(image, case_id, params.min_shape)
    voxel_mm3 = float(np.prod(spacing))
    fg = None
    if params.restrict_to_foreground:
        fg = body_mask(image, params.foreground_threshold)
        body_mm3 = float(fg.sum()) * voxel_mm3
        if body_mm3 < params.min_foreground_mm3:
            raise CaseError(
                case_id,
                f"all background: the body is {body_mm3:.0f} mm^3, "
                f"below min_foreground_mm3={params.min_foreground_mm3:g}",
            )
    maps = _segment(image, spacing, fg, params)
    # Labels are 0 outside the body, so counts, overlaps and renumbering only
    # need its bounding box (about half the volume on CT).
    box = (slice(None),) + (tuple(slice(0, n) for n in image.shape) if fg is None else bounding_box(fg))
    maps = np.ascontiguousarray(maps[box])
    voxels = []
    for s in range(maps.shape[0]):
        counts = np.bincount(maps[s].ravel())
        volume = counts * voxel_mm3
        counts[(volume < params.min_volume_mm3) | (volume > params.max_volume_mm3)] = 0
        counts[0] = 0
        voxels.append(counts)
    keep = deduplicate(maps, voxels, params.dedup_iou)
    n_kept = [int(k.sum()) for k in keep]
    if sum(n_kept) == 0:
        raise CaseError(
            case_id,
            f"no proposals: no segment at scales {list(params.scales_mm3)} lies within "
            f"[{params.min_volume_mm3:g}, {params.max_volume_mm3:g}] mm^3",
        )
    out = np.zeros((maps.shape[0],) + image.shape, label_dtype(max(n_kept)))
    for s, k in enumerate(keep):
        lut = np.zeros(k.size, out.dtype)
        lut[k] = np.arange(1, n_kept[s] + 1)
        out[s][box[1:]] = lut[maps[s]]
    return ProposalSet.from_label_maps(
        case_id, spacing, out, [params.generator] * len(n_kept), list(params.scales_mm3)
    )
