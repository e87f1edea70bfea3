"""Shared fixtures of the proposal tests (a plain module: a conftest.py here would shadow tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from mass_core.proposals.store import ProposalSet, write_store


def block_maps(shape=(20, 18, 16)) -> np.ndarray:
    """Two partitions (S=2) of a volume into boxes; labels 1..n per scale, background 0 at the border."""
    maps = np.zeros((2,) + shape, np.uint16)
    inner = (slice(1, -1),) * 3
    for s, size in enumerate((3, 6)):
        grid = np.indices(shape) // size
        labels = grid[0] * 100 + grid[1] * 10 + grid[2]
        values = np.unique(labels[inner])
        lut = {int(v): i + 1 for i, v in enumerate(values)}
        maps[s][inner] = np.vectorize(lut.get)(labels[inner])
    return maps


@pytest.fixture
def block_store(tmp_path):
    """A proposal store of :func:`block_maps`; yields (directory, label maps)."""
    maps = block_maps()
    proposals = ProposalSet.from_label_maps("case_a", (1.5, 1.5, 2.0), maps, ["fh3d", "fh3d"], [1.0, 4.0])
    write_store(tmp_path / "store", proposals)
    return tmp_path / "store", maps
