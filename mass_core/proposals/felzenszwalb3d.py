"""3D Felzenszwalb-Huttenlocher graph segmentation on the voxel grid, in numba.

Felzenszwalb & Huttenlocher (IJCV 2004): voxels are nodes, neighbouring
voxels are joined by edges weighted by their intensity difference; edges are
visited in increasing weight and two components merge when the edge is no
heavier than either component's internal difference plus ``k / size``.

Smoothing, edge weights and the sort do not depend on ``k``, so
:func:`build_graph` does them once per case and :func:`segment_scales` only
runs the union-find merge per scale. The sort is an exact LSD radix sort of
the float32 weight bits (non-negative IEEE floats order like their bit
patterns); ties keep the voxel-then-direction order, so results are
deterministic. The merge is bound by random memory access into the
union-find arrays, so nodes are numbered over the foreground only (the
arrays shrink with the body's share of the volume and stay cache-resident
longer), and the merge prefetches the nodes of the edges ahead. Only the
foreground's bounding box is smoothed and turned into edges.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic
from scipy import ndimage

from mass_core.arrays import bounding_box

__all__ = ["CONNECTIVITIES", "VoxelGraph", "build_graph", "segment_scales"]

CONNECTIVITIES = (6, 26)
# The low 32 bits of a packed edge hold (voxel << 4) | direction.
_DIRECTION_BITS = 4
_MAX_VOXELS = 1 << (32 - _DIRECTION_BITS)
_RADIX_BITS = 11
# The merge prefetches the nodes of the edge this many edges ahead, and the
# parents and internal differences of the nodes of the edge half as far.
_PREFETCH_DISTANCE = 32


@dataclass(frozen=True)
class VoxelGraph:
    """Edges of a volume's voxel graph, sorted by weight; built by :func:`build_graph`.

    Nodes are the foreground voxels, numbered in C order.

    Attributes:
        shape: volume shape (X, Y, Z).
        spacing: voxel spacing (X, Y, Z) in mm.
        u, v: uint32 (E,), the nodes of each edge, in increasing weight.
        weight: float32 (E,), the edge weights, increasing.
        voxels: int64 (N,), C-order flat voxel index of each node.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    u: np.ndarray
    v: np.ndarray
    weight: np.ndarray
    voxels: np.ndarray

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))


def _directions(connectivity: int) -> np.ndarray:
    # Half of the neighbourhood (lexicographically positive steps): every
    # undirected edge is listed once, from its first voxel in C order.
    steps = [s for s in itertools.product((-1, 0, 1), repeat=3) if s > (0, 0, 0)]
    if connectivity == 6:
        steps = [s for s in steps if sum(map(abs, s)) == 1]
    return np.array(steps, dtype=np.int64)


@intrinsic
def _prefetch(typingctx, array, index):
    """Hint the CPU to load ``array[index]`` into cache (LLVM's prefetch; numba exposes none).

    The merge visits nodes in edge-weight order, i.e. at random: each edge
    costs a cache miss or two, and the union-find's dependent loads keep the
    CPU from running far enough ahead to overlap them by itself.
    """

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        index = context.cast(builder, args[1], signature.args[1], types.intp)
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, [index], wraparound=False)
        byte_pointer, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]), "llvm.prefetch.p0i8"
        )
        # Read access, high temporal locality, data cache.
        builder.call(function, [builder.bitcast(pointer, byte_pointer), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(array, index), codegen


@numba.njit(cache=True, nogil=True)
def _count_edges(foreground: np.ndarray, steps: np.ndarray) -> int:
    nx, ny, nz = foreground.shape
    count = 0
    for x in range(nx):
        for y in range(ny):
            for z in range(nz):
                if not foreground[x, y, z]:
                    continue
                for d in range(steps.shape[0]):
                    x2, y2, z2 = x + steps[d, 0], y + steps[d, 1], z + steps[d, 2]
                    if 0 <= x2 < nx and 0 <= y2 < ny and 0 <= z2 < nz and foreground[x2, y2, z2]:
                        count += 1
    return count


@numba.njit(cache=True, nogil=True)
def _fill_edges(
    image: np.ndarray, foreground: np.ndarray, steps: np.ndarray, factors: np.ndarray, edges: np.ndarray
) -> np.ndarray:
    nx, ny, nz = image.shape
    radix = 1 << 11
    hist = np.zeros((3, radix), np.int64)
    scratch = np.empty(1, np.float32)
    bits = scratch.view(np.uint32)
    e = 0
    for x in range(nx):
        for y in range(ny):
            for z in range(nz):
                if not foreground[x, y, z]:
                    continue
                voxel = (x * ny + y) * nz + z
                for d in range(steps.shape[0]):
                    x2, y2, z2 = x + steps[d, 0], y + steps[d, 1], z + steps[d, 2]
                    if not (0 <= x2 < nx and 0 <= y2 < ny and 0 <= z2 < nz and foreground[x2, y2, z2]):
                        continue
                    scratch[0] = abs(image[x, y, z] - image[x2, y2, z2]) * factors[d]
                    key = bits[0]
                    hist[0, key & 2047] += 1
                    hist[1, (key >> 11) & 2047] += 1
                    hist[2, key >> 22] += 1
                    edges[e] = (np.uint64(key) << np.uint64(32)) | np.uint64((voxel << 4) | d)
                    e += 1
    return hist


@numba.njit(cache=True, nogil=True)
def _radix_sort(edges: np.ndarray, hist: np.ndarray) -> np.ndarray:
    # Stable LSD passes over the 32 key bits, 11 bits at a time; a pass whose
    # digit is the same for every edge is skipped.
    n = edges.size
    src = edges
    dst = np.empty_like(edges)
    for p in range(3):
        if hist[p].max() == n:
            continue
        shift = np.uint64(32 + 11 * p)
        pos = np.empty(hist.shape[1], np.int64)
        total = 0
        for b in range(hist.shape[1]):
            pos[b] = total
            total += hist[p, b]
        for i in range(n):
            v = src[i]
            digit = (v >> shift) & np.uint64(2047)
            dst[pos[digit]] = v
            pos[digit] += 1
        src, dst = dst, src
    return src


@numba.njit(cache=True, nogil=True)
def _unpack(
    edges: np.ndarray, offsets: np.ndarray, node: np.ndarray, u: np.ndarray, v: np.ndarray, weight: np.ndarray
) -> None:
    bits = weight.view(np.uint32)
    n_edges = edges.size
    for e in range(n_edges):
        if e + _PREFETCH_DISTANCE < n_edges:
            _prefetch(node, np.int64((edges[e + _PREFETCH_DISTANCE] & np.uint64(0xFFFFFFFF)) >> np.uint64(4)))
        packed = edges[e]
        low = np.int64(packed & np.uint64(0xFFFFFFFF))
        voxel = low >> 4
        u[e] = node[voxel]
        v[e] = node[voxel + offsets[low & 15]]
        bits[e] = np.uint32(packed >> np.uint64(32))


def build_graph(
    image: np.ndarray,
    spacing: tuple[float, float, float],
    *,
    sigma_mm: float = 1.0,
    connectivity: int = 6,
    foreground: np.ndarray | None = None,
) -> VoxelGraph:
    """Smooth ``image``, weight its voxel-grid edges and sort them (once per case).

    Args:
        image: float (X, Y, Z), e.g. a z-scored standardized image.
        spacing: voxel spacing (X, Y, Z) in mm.
        sigma_mm: standard deviation of the Gaussian smoothing, in mm (0: none).
        connectivity: 6 (faces) or 26 (faces, edges and corners).
        foreground: bool (X, Y, Z); edges touching other voxels are left out,
            which makes those voxels background (label 0). Default: all voxels.

    Edge weight: ``|I(p) - I(q)| * min(spacing) / |p - q|_mm``, the intensity
    step per finest-axis voxel, so that anisotropic or diagonal neighbours are
    compared as gradients rather than raw differences.

    Example:
        >>> graph = build_graph(np.zeros((4, 4, 4), np.float32), (1.5, 1.5, 1.5))
        >>> graph.weight.size  # 3 * 4 * 4 * 3 six-connected edges
        144
    """
    if image.ndim != 3:
        raise ValueError(f"image must be 3D (X, Y, Z), got shape {image.shape}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive numbers in mm, got {spacing}")
    if connectivity not in CONNECTIVITIES:
        raise ValueError(f"connectivity must be one of {CONNECTIVITIES}, got {connectivity}")
    if sigma_mm < 0:
        raise ValueError(f"sigma_mm must be >= 0, got {sigma_mm}")
    if image.size >= _MAX_VOXELS:
        raise ValueError(f"image has {image.size} voxels; at most {_MAX_VOXELS - 1} are supported")
    if foreground is None:
        foreground = np.ones(image.shape, dtype=bool)
    elif foreground.shape != image.shape:
        raise ValueError(f"foreground must have the image's shape {image.shape}, got {foreground.shape}")
    spacing = tuple(float(s) for s in spacing)
    foreground = np.ascontiguousarray(foreground, dtype=bool)
    # The box holds every foreground voxel and keeps C order: nodes are
    # numbered alike in the box and in the volume.
    voxels = np.flatnonzero(foreground)
    sigmas = [sigma_mm / s for s in spacing]
    # Only the foreground's bounding box is segmented, and only that box plus
    # the Gaussian's reach is smoothed: scipy's kernel spans
    # int(4 * sigma + 0.5) voxels either side and filters axis by axis, so
    # the box's values come out bit-identical to smoothing the whole volume.
    box = bounding_box(foreground)
    reach = tuple(
        slice(max(b.start - r, 0), min(b.stop + r, n))
        for b, r, n in zip(box, (int(4.0 * s + 0.5) if sigma_mm > 0 else 0 for s in sigmas), image.shape)
    )
    smoothed = np.asarray(image[reach], dtype=np.float32)
    if sigma_mm > 0:
        smoothed = ndimage.gaussian_filter(smoothed, sigmas, mode="nearest")
    inner = tuple(slice(b.start - r.start, b.stop - r.start) for b, r in zip(box, reach))
    smoothed = np.ascontiguousarray(smoothed[inner])
    box_foreground = np.ascontiguousarray(foreground[box])
    steps = _directions(connectivity)
    factors = np.array([min(spacing) / math.dist((0, 0, 0), s * np.array(spacing)) for s in steps], np.float32)
    edges = np.empty(_count_edges(box_foreground, steps), np.uint64)
    hist = _fill_edges(smoothed, box_foreground, steps, factors, edges)
    edges = _radix_sort(edges, hist)
    nx, ny, nz = box_foreground.shape
    offsets = steps @ np.array([ny * nz, nz, 1], np.int64)
    node = np.zeros(box_foreground.size, np.uint32)
    node[box_foreground.reshape(-1)] = np.arange(voxels.size, dtype=np.uint32)
    u, v = np.empty(edges.size, np.uint32), np.empty(edges.size, np.uint32)
    weight = np.empty(edges.size, np.float32)
    _unpack(edges, offsets, node, u, v, weight)
    return VoxelGraph(shape=image.shape, spacing=spacing, u=u, v=v, weight=weight, voxels=voxels)


# Union-find over nodes: parent[i] is i's parent, or minus the size for a
# root; internal[r] is root r's internal difference (its largest MST edge).


@numba.njit(cache=True, nogil=True, inline="always")
def _find(parent: np.ndarray, x: np.int64) -> np.int64:
    # Path halving.
    while True:
        p = parent[x]
        if p < 0:
            return x
        gp = parent[p]
        if gp < 0:
            return p
        parent[x] = gp
        x = gp


@numba.njit(cache=True, nogil=True, inline="always")
def _union(parent: np.ndarray, internal: np.ndarray, a: np.int64, b: np.int64, w: float) -> None:
    size_a, size_b = -parent[a], -parent[b]
    if size_a < size_b:
        a, b = b, a
    parent[a] = -(size_a + size_b)
    parent[b] = a
    internal[a] = w


@numba.njit(cache=True, nogil=True, inline="always")
def _prefetch_ahead(parent: np.ndarray, internal: np.ndarray, far: np.int64, near: np.int64) -> None:
    # `far` is needed _PREFETCH_DISTANCE edges from now: fetch its entry.
    # `near`, half as far, was fetched so earlier: its parent (or, for a
    # root, its internal difference) is what the find will touch next.
    _prefetch(parent, far)
    p = parent[near]
    if p >= 0:
        _prefetch(parent, p)
        _prefetch(internal, p)
    else:
        _prefetch(internal, near)


@numba.njit(cache=True, nogil=True)
def _merge(
    u: np.ndarray,
    v: np.ndarray,
    weight: np.ndarray,
    parent: np.ndarray,
    internal: np.ndarray,
    k: float,
    min_size: int,
    rejected: np.ndarray,
) -> None:
    # One pass of the FH criterion, then one pass that joins any component
    # still smaller than min_size to its cheapest neighbour. The second pass
    # only needs the edges the first one rejected (an edge inside a component
    # stays inside), kept in order in `rejected`; and of those only the ones
    # with a component below min_size when rejected: components only grow,
    # so an edge between two that reach min_size can never join anything.
    n_edges = weight.size
    far, near = _PREFETCH_DISTANCE, _PREFETCH_DISTANCE // 2
    n_rejected = 0
    for e in range(n_edges):
        if e + far < n_edges:
            _prefetch_ahead(parent, internal, u[e + far], u[e + near])
            _prefetch_ahead(parent, internal, v[e + far], v[e + near])
        a = _find(parent, u[e])
        b = _find(parent, v[e])
        if a == b:
            continue
        w = weight[e]
        size_a, size_b = -parent[a], -parent[b]
        if w <= min(internal[a] + k / size_a, internal[b] + k / size_b):
            _union(parent, internal, a, b, w)
        elif min(size_a, size_b) < min_size:
            rejected[n_rejected] = e
            n_rejected += 1
    for i in range(n_rejected):
        if i + far < n_rejected:
            e_far, e_near = rejected[i + far], rejected[i + near]
            _prefetch_ahead(parent, internal, u[e_far], u[e_near])
            _prefetch_ahead(parent, internal, v[e_far], v[e_near])
        e = rejected[i]
        a = _find(parent, u[e])
        b = _find(parent, v[e])
        if a != b and (-parent[a] < min_size or -parent[b] < min_size):
            _union(parent, internal, a, b, max(weight[e], internal[a], internal[b]))


@numba.njit(cache=True, nogil=True)
def _relabel(parent: np.ndarray, voxels: np.ndarray, out: np.ndarray) -> int:
    # Labels 1..n numbered in raster order of each segment's first voxel.
    root_label = np.zeros(parent.size, np.int32)
    n = 0
    for i in range(parent.size):
        r = _find(parent, i)
        if root_label[r] == 0:
            n += 1
            root_label[r] = n
        out[voxels[i]] = root_label[r]
    return n


def segment_scales(
    graph: VoxelGraph, scales_mm3: tuple[float, ...], *, min_size_mm3: float = 0.0, hierarchical: bool = False
) -> np.ndarray:
    """Felzenszwalb-Huttenlocher segmentation of ``graph`` at each scale.

    Args:
        graph: from :func:`build_graph`.
        scales_mm3: FH's ``k`` per scale, in (intensity unit x mm^3): a
            component of volume V merges across edges up to ``k / V`` heavier
            than its internal difference. Larger ``k``: larger segments.
            Physical units make a scale mean the same at any spacing.
        min_size_mm3: segments smaller than this are joined to their cheapest
            neighbour after the merge pass.
        hierarchical: each scale continues from the previous scale's
            segments, so coarse segments are unions of fine ones (needs
            increasing ``scales_mm3``); otherwise scales are independent.

    Returns:
        int32 (S, X, Y, Z): per scale, labels ``1..n_s`` (raster order of
        first voxel) on the foreground, 0 elsewhere.
    """
    scales = tuple(float(k) for k in scales_mm3)
    if not scales or min(scales) < 0:
        raise ValueError(f"scales_mm3 must be a non-empty list of numbers >= 0, got {scales_mm3}")
    if hierarchical and list(scales) != sorted(scales):
        raise ValueError(f"scales_mm3 must increase when hierarchical is set, got {scales_mm3}")
    if min_size_mm3 < 0:
        raise ValueError(f"min_size_mm3 must be >= 0, got {min_size_mm3}")
    voxel_mm3 = graph.voxel_volume_mm3
    min_size = int(math.ceil(min_size_mm3 / voxel_mm3))
    out = np.zeros((len(scales),) + tuple(graph.shape), np.int32)
    parent = np.empty(graph.voxels.size, np.int32)
    internal = np.empty(graph.voxels.size, np.float32)
    rejected = np.empty(graph.weight.size, np.uint32 if graph.weight.size < 2**32 else np.int64)
    for s, k in enumerate(scales):
        if s == 0 or not hierarchical:
            parent.fill(-1)
            internal.fill(0)
        _merge(graph.u, graph.v, graph.weight, parent, internal, k / voxel_mm3, min_size, rejected)
        _relabel(parent, graph.voxels, out[s].reshape(-1))
    return out
