from __future__ import annotations

import numpy as np
import pytest

from mass_core.pretrain.masking import patch_mask


@pytest.mark.parametrize("size, patch, ratio", [((16, 16, 16), 4, 0.75), ((8, 16, 24), 8, 0.5), ((32, 32, 16), 4, 0.6)])
def test_exact_ratio_of_whole_patches(size, patch, ratio):
    mask = patch_mask(np.random.default_rng(1), size, patch, ratio)
    assert mask.shape == size
    n_patches = np.prod([s // patch for s in size])
    assert mask.sum() == round(ratio * n_patches) * patch**3
    blocks = mask.reshape(size[0] // patch, patch, size[1] // patch, patch, size[2] // patch, patch)
    assert np.all(blocks.min(axis=(1, 3, 5)) == blocks.max(axis=(1, 3, 5)))  # each patch wholly hidden or visible


def test_same_generator_state_same_mask():
    a = patch_mask(np.random.default_rng([3, 4]), (16, 16, 16), 4, 0.7)
    b = patch_mask(np.random.default_rng([3, 4]), (16, 16, 16), 4, 0.7)
    c = patch_mask(np.random.default_rng([3, 5]), (16, 16, 16), 4, 0.7)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("kwargs, message", [({"ratio": 1.0}, "ratio"), ({"ratio": 0.0}, "ratio"), ({"patch": 5}, "multiple of patch")])
def test_bad_arguments(kwargs, message):
    args = {"size": (16, 16, 16), "patch": 4, "ratio": 0.5} | kwargs
    with pytest.raises(ValueError, match=message):
        patch_mask(np.random.default_rng(0), **args)
