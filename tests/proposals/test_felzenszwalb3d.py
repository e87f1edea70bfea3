from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import ndimage

from mass_core.proposals.felzenszwalb3d import build_graph, segment_scales


def _canonical(labels: np.ndarray) -> np.ndarray:
    """Relabel 1..n in raster order of first occurrence; 0 stays 0."""
    out = np.zeros(labels.shape, np.int64)
    mapping: dict[int, int] = {}
    for i, v in enumerate(labels.ravel()):
        if v:
            out.ravel()[i] = mapping.setdefault(int(v), len(mapping) + 1)
    return out


def _reference(image, spacing, connectivity, scales, min_size_mm3, hierarchical, foreground):
    """Felzenszwalb-Huttenlocher by brute force: explicit component arrays, no union-find.

    Same merge criterion and edge order as the paper: edges ascending by weight
    (ties in voxel-then-direction order), merge when w <= min(Int + k / |C|),
    then join components smaller than the minimum size along the same order.
    """
    shape = image.shape
    steps = [s for s in itertools.product((-1, 0, 1), repeat=3) if s > (0, 0, 0)]
    if connectivity == 6:
        steps = [s for s in steps if sum(map(abs, s)) == 1]
    edges = []
    for p in itertools.product(*map(range, shape)):
        for d, step in enumerate(steps):
            q = tuple(a + b for a, b in zip(p, step))
            if all(0 <= c < n for c, n in zip(q, shape)) and foreground[p] and foreground[q]:
                factor = np.float32(min(spacing) / math.dist((0, 0, 0), [s * h for s, h in zip(step, spacing)]))
                w = np.float32(abs(np.float32(image[p]) - np.float32(image[q])) * factor)
                edges.append((float(w), np.ravel_multi_index(p, shape), np.ravel_multi_index(q, shape)))
    edges.sort(key=lambda e: e[0])  # stable: ties keep voxel-then-direction order
    voxel_mm3 = float(np.prod(spacing))
    min_size = math.ceil(min_size_mm3 / voxel_mm3)
    n = int(np.prod(shape))
    results = []
    comp = np.arange(n)
    internal = {i: 0.0 for i in range(n)}
    for s, k_mm3 in enumerate(scales):
        if s > 0 and not hierarchical:
            comp = np.arange(n)
            internal = {i: 0.0 for i in range(n)}
        k = k_mm3 / voxel_mm3

        def join(a, b, w):
            comp[comp == b] = a
            internal[a] = w

        for w, u, v in edges:
            a, b = comp[u], comp[v]
            if a == b:
                continue
            size_a, size_b = np.sum(comp == a), np.sum(comp == b)
            if w <= min(internal[a] + k / size_a, internal[b] + k / size_b):
                join(a, b, w)
        for w, u, v in edges:
            a, b = comp[u], comp[v]
            if a != b and (np.sum(comp == a) < min_size or np.sum(comp == b) < min_size):
                join(a, b, max(w, internal[a], internal[b]))
        results.append(_canonical(np.where(foreground.ravel(), comp + 1, 0).reshape(shape)))
    return results


@pytest.mark.parametrize(
    "connectivity, spacing, scales, min_size_mm3, hierarchical, with_foreground",
    [
        (6, (1.0, 1.0, 1.0), (0.5, 2.0), 0.0, False, False),
        (6, (0.8, 1.0, 2.5), (0.3, 1.0, 4.0), 6.0, False, True),
        (26, (1.5, 1.5, 1.5), (1.0, 8.0), 10.0, False, False),
        (26, (0.7, 0.7, 2.0), (0.2, 1.0, 5.0), 3.0, True, True),
    ],
)
def test_agrees_with_brute_force_reference(connectivity, spacing, scales, min_size_mm3, hierarchical, with_foreground):
    rng = np.random.default_rng(7)
    # Few grey levels: many tied weights, so the tie order is exercised too.
    image = rng.integers(0, 5, size=(5, 4, 4)).astype(np.float32) * 0.25
    foreground = np.ones(image.shape, bool)
    if with_foreground:
        foreground[0, 0, :] = False
        foreground[4, 3, 3] = False
    graph = build_graph(image, spacing, sigma_mm=0.0, connectivity=connectivity, foreground=foreground)
    got = segment_scales(graph, scales, min_size_mm3=min_size_mm3, hierarchical=hierarchical)
    expected = _reference(image, spacing, connectivity, scales, min_size_mm3, hierarchical, foreground)
    for s in range(len(scales)):
        np.testing.assert_array_equal(got[s], expected[s], err_msg=f"scale {scales[s]}")
    assert got.dtype == np.int32


@pytest.mark.parametrize(
    "connectivity, shape, scales, hierarchical",
    [(6, (13, 11, 10), (0.5, 2.0, 8.0), False), (6, (13, 11, 10), (0.5, 2.0, 8.0), True), (26, (9, 8, 8), (1.0, 6.0), False)],
)
def test_smoothed_body_agrees_with_whole_volume_reference(connectivity, shape, scales, hierarchical):
    # The fast path smooths and segments only the foreground's bounding box
    # (plus the Gaussian's reach), prefetches, and keeps for the min-size pass
    # only rejected edges with a side below the minimum; the reference smooths
    # the whole volume and runs both passes over every edge.
    rng = np.random.default_rng(3)
    image = (np.kron(rng.normal(size=(3, 3, 2)), np.ones((5, 4, 5)))[: shape[0], : shape[1], : shape[2]]
             + rng.normal(scale=0.3, size=shape)).astype(np.float32)
    grid = np.indices(shape)
    foreground = (grid[0] >= 3) & (grid[0] < shape[0] - 2) & (grid[1] >= 2) & (grid[2] < shape[2] - 1)
    foreground[5, 4, :] = False  # a hole through the body
    spacing, sigma_mm = (1.2, 1.0, 1.5), 1.3
    graph = build_graph(image, spacing, sigma_mm=sigma_mm, connectivity=connectivity, foreground=foreground)
    got = segment_scales(graph, scales, min_size_mm3=20.0, hierarchical=hierarchical)
    smoothed = ndimage.gaussian_filter(image, [sigma_mm / h for h in spacing], mode="nearest")
    expected = _reference(smoothed, spacing, connectivity, scales, 20.0, hierarchical, foreground)
    for s in range(len(scales)):
        np.testing.assert_array_equal(got[s], expected[s], err_msg=f"scale {scales[s]}")
    # Not a trivial partition: several segments per scale, and the minimum size joins some.
    assert all(int(m.max()) > 2 for m in got)
    assert int(segment_scales(graph, scales[:1])[0].max()) > int(got[0].max())


@pytest.mark.parametrize("connectivity", [6, 26])
def test_recovers_piecewise_constant_blocks_exactly(connectivity):
    blocks = np.arange(3 * 2 * 2).reshape(3, 2, 2)
    truth = np.kron(blocks, np.ones((4, 5, 3), int))  # 12 x 10 x 6 voxels, 12 blocks
    image = (truth * 1.7 % 5.3).astype(np.float32)  # distinct, unordered levels
    graph = build_graph(image, (1.0, 0.8, 2.0), sigma_mm=0.0, connectivity=connectivity)
    labels = segment_scales(graph, (1.0, 4.0), min_size_mm3=0.0)
    for s in range(2):
        np.testing.assert_array_equal(labels[s], _canonical(truth + 1))


def test_larger_scales_give_fewer_segments_and_nest_when_hierarchical():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(16, 16, 12)).astype(np.float32)
    graph = build_graph(image, (1.5, 1.5, 1.5), sigma_mm=1.0)
    labels = segment_scales(graph, (1.0, 10.0, 100.0), min_size_mm3=10.0, hierarchical=True)
    counts = [int(m.max()) for m in labels]
    assert counts[0] > counts[1] > counts[2] >= 1
    for fine, coarse in zip(labels[:-1], labels[1:]):
        # Nested: every fine segment lies inside one coarse segment.
        pairs = np.unique(np.stack([fine.ravel(), coarse.ravel()]), axis=1)
        assert np.unique(pairs[0]).size == pairs.shape[1]


def test_background_is_zero_and_edges_are_counted_once():
    foreground = np.zeros((4, 4, 4), bool)
    foreground[1:3, 1:3, 1:3] = True
    graph = build_graph(np.zeros((4, 4, 4), np.float32), (1.0, 1.0, 1.0), sigma_mm=0.0, foreground=foreground)
    assert graph.weight.size == 3 * 2 * 2 * 1 and graph.voxels.size == 8  # 2x2x2 cube: 4 edges per axis
    labels = segment_scales(graph, (1.0,))
    assert set(np.unique(labels[0][~foreground])) == {0}
    assert set(np.unique(labels[0][foreground])) == {1}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"connectivity": 18}, "connectivity"),
        ({"sigma_mm": -1.0}, "sigma_mm"),
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing"),
        ({"foreground": np.ones((2, 2, 2), bool)}, "foreground"),
    ],
)
def test_build_graph_rejects_bad_arguments(kwargs, match):
    args = {"image": np.zeros((3, 3, 3), np.float32), "spacing": (1.0, 1.0, 1.0), **kwargs}
    with pytest.raises(ValueError, match=match):
        build_graph(**args)


def test_segment_scales_rejects_bad_scales():
    graph = build_graph(np.zeros((3, 3, 3), np.float32), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="scales_mm3"):
        segment_scales(graph, ())
    with pytest.raises(ValueError, match="scales_mm3"):
        segment_scales(graph, (4.0, 1.0), hierarchical=True)
    with pytest.raises(ValueError, match="min_size_mm3"):
        segment_scales(graph, (1.0,), min_size_mm3=-1)
