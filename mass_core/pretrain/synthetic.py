"""Tiny synthetic cases with proposals, for tests and benchmarks of pretraining.

Each case is a z-scored-like volume of ellipsoids of distinct intensities on
a smooth textured background, with two proposal scales: every ellipsoid on
its own (fine), and the ellipsoids grouped by brighter / darker than the
background plus the background itself (coarse). Everything follows from the
seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from mass_core.atomic import write_npy, write_with
from mass_core.proposals.labels import label_dtype
from mass_core.proposals.store import ProposalSet, write_store
from mass_core.pretrain.sampler import CaseArrays

__all__ = ["SyntheticDataset", "synthetic_case", "write_synthetic_dataset"]


def _consecutive(labels: np.ndarray) -> np.ndarray:
    """Relabel positive labels to ``1..n`` in order, keeping 0."""
    values, inverse = np.unique(labels, return_inverse=True)
    offset = 0 if values[0] == 0 else 1
    relabelled = (inverse.reshape(labels.shape) + offset).astype(np.int64)
    return relabelled.astype(label_dtype(int(relabelled.max(initial=0))))


def synthetic_case(seed: int, shape: tuple[int, int, int] = (40, 40, 40), n_objects: int = 8, case_id: str = "") -> CaseArrays:
    """One synthetic case: float32 image ``(X, Y, Z)`` and unsigned proposals ``(2, X, Y, Z)``.

    Args:
        seed: the only source of randomness.
        shape: volume size in voxels.
        n_objects: ellipsoids to place (later ones cover earlier ones).
        case_id: name stored with the case.
    """
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float32)
    image = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=3) * 3.0
    objects = np.zeros(shape, np.int64)
    intensity = np.zeros(n_objects + 1, np.float32)
    smallest = min(shape)
    for k in range(1, n_objects + 1):
        centre = rng.uniform(0.15, 0.85, size=3) * np.asarray(shape)
        radii = rng.uniform(0.08, 0.22, size=3) * smallest
        inside = (((grid - centre) / radii) ** 2).sum(-1) <= 1
        # Away from the background's 0 so that every object has a visible edge.
        intensity[k] = rng.choice([-1, 1]) * rng.uniform(0.8, 2.5)
        objects[inside] = k
        image[inside] = intensity[k]
    image += 0.15 * rng.standard_normal(shape).astype(np.float32)
    coarse = np.where(objects == 0, 3, np.where(intensity[objects] > 0, 1, 2))
    proposals = np.stack([_consecutive(objects), _consecutive(coarse)]).astype(np.uint16)
    return CaseArrays(image=image.astype(np.float32), proposals=proposals, case_id=case_id)


@dataclass(frozen=True)
class SyntheticDataset:
    """Paths of a dataset written by :func:`write_synthetic_dataset`.

    Attributes:
        manifest: ``manifest.parquet`` (columns ``case_id``, ``image``, ``split``).
        proposals_root: folder of one proposal store per case (``<root>/<case_id>/``).
    """

    manifest: Path
    proposals_root: Path


def write_synthetic_dataset(root: str | os.PathLike, n_cases: int, shape: tuple[int, int, int] = (40, 40, 40), seed: int = 0, n_val: int = 1) -> SyntheticDataset:
    """Write cases as the pipeline lays them out: ``image.npy``, a proposal store each, a manifest.

    The last ``n_val`` cases get split ``val``, the rest ``train``.
    """
    if n_cases <= n_val:
        raise ValueError(f"n_cases must exceed n_val ({n_val}), got {n_cases}")
    root = Path(root)
    rows = []
    for i in range(n_cases):
        case_id = f"case_{i:03d}"
        case = synthetic_case(seed * 10_000 + i, shape, case_id=case_id)
        image_path = write_npy(root / "standardized" / case_id / "image.npy", case.image)
        write_store(
            root / "proposals" / case_id,
            ProposalSet.from_label_maps(case_id, (1.5, 1.5, 1.5), case.proposals, sources=("synthetic", "synthetic"), scale_params=(1.0, 2.0)),
        )
        rows.append({"case_id": case_id, "image": str(image_path), "split": "train" if i < n_cases - n_val else "val"})
    manifest = write_with(root / "manifest.parquet", lambda tmp: pd.DataFrame(rows).to_parquet(tmp, index=False))
    return SyntheticDataset(manifest=manifest, proposals_root=root / "proposals")
