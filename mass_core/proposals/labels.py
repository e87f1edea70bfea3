"""Primitives on integer label maps (X, Y, Z): region statistics, overlap counts, dtypes.

Label 0 is background everywhere; proposals are the positive labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

__all__ = ["PairCounts", "RegionStats", "label_dtype", "pair_counts", "region_stats"]


@dataclass(frozen=True)
class RegionStats:
    """Per-label statistics of a label map with labels ``0..n``.

    Attributes:
        voxels: int64 (n + 1,), voxel count of each label (index 0 = background).
        bbox: int64 (n + 1, 6), half-open box ``[x0, x1, y0, y1, z0, z1]`` in
            voxels; all zeros for labels that do not occur.
    """

    voxels: np.ndarray
    bbox: np.ndarray


@dataclass(frozen=True)
class PairCounts:
    """Overlap of two label maps: for every pair of positive labels that share voxels.

    Attributes:
        a: int64 (P,), label in the first map.
        b: int64 (P,), label in the second map.
        count: int64 (P,), number of voxels labelled ``a`` in the first map and
            ``b`` in the second.
    """

    a: np.ndarray
    b: np.ndarray
    count: np.ndarray


def label_dtype(n_labels: int) -> np.dtype:
    """Smallest unsigned dtype that holds labels ``0..n_labels``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if n_labels <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"n_labels must be below 2**32, got {n_labels}")


@numba.njit(cache=True, nogil=True)
def _region_stats(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    nx, ny, nz = labels.shape
    voxels = np.zeros(n + 1, np.int64)
    lo = np.empty((n + 1, 3), np.int64)
    hi = np.zeros((n + 1, 3), np.int64)
    lo[:, 0], lo[:, 1], lo[:, 2] = nx, ny, nz
    # One update per run of equal labels along Z (label maps are mostly long
    # runs), not per voxel.
    for x in range(nx):
        for y in range(ny):
            start = 0
            for z in range(1, nz + 1):
                if z < nz and labels[x, y, z] == labels[x, y, start]:
                    continue
                v = labels[x, y, start]
                voxels[v] += z - start
                lo[v, 0] = min(lo[v, 0], x)
                lo[v, 1] = min(lo[v, 1], y)
                lo[v, 2] = min(lo[v, 2], start)
                hi[v, 0] = max(hi[v, 0], x + 1)
                hi[v, 1] = max(hi[v, 1], y + 1)
                hi[v, 2] = max(hi[v, 2], z)
                start = z
    bbox = np.zeros((n + 1, 6), np.int64)
    for v in range(n + 1):
        if voxels[v] > 0:
            for d in range(3):
                bbox[v, 2 * d] = lo[v, d]
                bbox[v, 2 * d + 1] = hi[v, d]
    return voxels, bbox


def region_stats(labels: np.ndarray) -> RegionStats:
    """Voxel count and bounding box of every label ``0..labels.max()`` of ``labels`` (X, Y, Z)."""
    if labels.ndim != 3 or labels.dtype.kind not in "ui":
        raise ValueError(f"labels must be a 3D integer array, got {labels.ndim}D {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be non-negative")
    voxels, bbox = _region_stats(labels, int(labels.max(initial=0)))
    return RegionStats(voxels=voxels, bbox=bbox)


@numba.njit(cache=True, nogil=True)
def _flush(keys: np.ndarray, counts: np.ndarray, key: np.int64, run: np.int64) -> None:
    # Open addressing with a Fibonacci hash: a dictionary of int64 keys at a
    # fraction of numba.typed.Dict's cost.
    mask = keys.size - 1
    slot = np.int64((np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)) & mask
    while keys[slot] != key and keys[slot] != -1:
        slot = (slot + 1) & mask
    keys[slot] = key
    counts[slot] += run


@numba.njit(cache=True, nogil=True)
def _pair_counts(a: np.ndarray, b: np.ndarray, n_b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Runs of equal (a, b) along the raster are long in label maps, so the
    # hash table sees one update per run instead of one per voxel.
    runs = 1
    for i in range(1, a.size):
        if a[i] != a[i - 1] or b[i] != b[i - 1]:
            runs += 1
    capacity = 16
    while capacity < 2 * runs:
        capacity *= 2
    keys = np.full(capacity, -1, np.int64)
    counts = np.zeros(capacity, np.int64)
    stride = np.int64(n_b) + 1
    run = np.int64(0)
    for i in range(a.size):
        if i > 0 and (a[i] != a[i - 1] or b[i] != b[i - 1]):
            if a[i - 1] > 0 and b[i - 1] > 0:
                _flush(keys, counts, np.int64(a[i - 1]) * stride + np.int64(b[i - 1]), run)
            run = 0
        run += 1
    last = a.size - 1
    if a.size > 0 and a[last] > 0 and b[last] > 0:
        _flush(keys, counts, np.int64(a[last]) * stride + np.int64(b[last]), run)
    used = keys >= 0
    pairs = keys[used]
    order = np.argsort(pairs)
    pairs = pairs[order]
    return pairs // stride, pairs % stride, counts[used][order]


def pair_counts(a: np.ndarray, b: np.ndarray) -> PairCounts:
    """Contingency of two label maps of equal shape, over voxels positive in both.

    Pairs come sorted by ``(a, b)``. Works for any shape; maps are compared
    voxel by voxel in C order.
    """
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    flat_a = np.ascontiguousarray(a).reshape(-1)
    flat_b = np.ascontiguousarray(b).reshape(-1)
    la, lb, count = _pair_counts(flat_a, flat_b, int(flat_b.max(initial=0)))
    return PairCounts(a=la, b=lb, count=count)
