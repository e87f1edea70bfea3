from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from mass_core.pretrain.augment import (
    IntensityAugConfig,
    SpatialAugConfig,
    affine_theta,
    augment_intensity,
    random_affine,
    warp_query,
)

torch.set_num_threads(1)


def _grid(shape):
    return np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)


def test_warp_matches_scipy_affine_transform():
    # Anisotropic crop and a full matrix: catches any (X, Y, Z) vs grid (Z, Y, X) mix-up.
    rng = np.random.default_rng(0)
    image = ndimage.gaussian_filter(rng.standard_normal((20, 24, 16)), 2).astype(np.float32)
    matrix = np.array([[1.2, 0.1, 0.0], [0.05, 0.9, 0.2], [0.0, -0.1, 1.1]])
    theta = torch.from_numpy(affine_theta(matrix, image.shape))[None]
    warped = warp_query(torch.from_numpy(image)[None, None], torch.zeros(1, 1, *image.shape), theta).image[0, 0].numpy()
    centre = (np.asarray(image.shape) - 1) / 2
    expected = ndimage.affine_transform(image, matrix, offset=centre - matrix @ centre, order=1)
    source = (_grid(image.shape) - centre) @ matrix.T + centre
    inside = np.all((source >= 0.5) & (source <= np.asarray(image.shape) - 1.5), axis=-1)
    assert inside.mean() > 0.4
    np.testing.assert_allclose(warped[inside], expected[inside], atol=1e-5)


def test_masks_follow_the_image():
    # A blocks image with values +-1 and its mask "image > 0": after any affine,
    # thresholding the warped image must give the warped mask where the
    # interpolation stays inside the crop.
    size = (24, 24, 24)
    g = _grid(size)
    image = np.where(((g // 4).sum(-1) % 2) == 0, 1.0, -1.0).astype(np.float32)
    mask = (image > 0).astype(np.uint8)
    rng = np.random.default_rng(3)
    thetas = np.stack([random_affine(rng, SpatialAugConfig(), size) for _ in range(4)])
    batch = torch.from_numpy(np.repeat(image[None, None], 4, 0))
    masks = torch.from_numpy(np.repeat(np.stack([mask, 1 - mask])[None], 4, 0))
    warped = warp_query(batch, masks, torch.from_numpy(thetas))
    support = warp_query(torch.ones_like(batch), masks, torch.from_numpy(thetas)).image
    inside = support > 1 - 1e-6
    tie = warped.image.abs() < 1e-4  # exactly on a boundary either side is right
    agree = (warped.image > 0) == warped.masks[:, :1].bool()
    assert inside.float().mean() > 0.3
    assert bool(agree[inside & ~tie].all())
    assert bool((warped.masks[:, 0] + warped.masks[:, 1])[inside[:, 0]].eq(1).all())
    assert warped.masks.dtype == torch.float32 and set(warped.masks.unique().tolist()) <= {0.0, 1.0}


def test_identity_keeps_everything():
    image = torch.randn(2, 1, 8, 12, 16)
    masks = (torch.rand(2, 3, 8, 12, 16) > 0.5).to(torch.uint8)
    theta = torch.from_numpy(np.stack([random_affine(np.random.default_rng(0), SpatialAugConfig(probability=0), (8, 12, 16))] * 2))
    warped = warp_query(image, masks, theta)
    assert torch.allclose(warped.image, image, atol=1e-5)
    assert torch.equal(warped.masks, masks.float())


def test_random_affine_respects_ranges():
    rng = np.random.default_rng(0)
    for _ in range(50):
        theta = random_affine(rng, SpatialAugConfig(rotation_deg=0.0), (16, 16, 32))
        # Without rotation theta is diagonal and, undoing the normalisation, holds the scales.
        scales = np.diag(theta[:, :3])
        assert np.allclose(theta[:, :3], np.diag(scales))
        assert np.all((scales >= 0.7 - 1e-6) & (scales <= 1.43 + 1e-6))
    rotated = random_affine(np.random.default_rng(1), SpatialAugConfig(scale=(1.0, 1.0)), (16, 16, 16))[:, :3]
    assert np.allclose(rotated @ rotated.T, np.eye(3), atol=1e-5)  # a pure rotation on a cube


def test_intensity_augmentation():
    rng = np.random.default_rng(0)
    image = rng.standard_normal((16, 16, 16)).astype(np.float32)
    original = image.copy()
    off = augment_intensity(image, np.random.default_rng(1), IntensityAugConfig(probability=0.0))
    np.testing.assert_array_equal(off, image)
    a = augment_intensity(image, np.random.default_rng(5), IntensityAugConfig(probability=1.0))
    b = augment_intensity(image, np.random.default_rng(5), IntensityAugConfig(probability=1.0))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.shape == image.shape and not np.allclose(a, image)
    np.testing.assert_array_equal(image, original)  # input untouched


@pytest.mark.parametrize(
    "cls, kwargs, message",
    [
        (IntensityAugConfig, {"probability": 1.5}, "probability"),
        (IntensityAugConfig, {"gamma": (1.5, 0.7)}, "gamma"),
        (IntensityAugConfig, {"noise_std": (-0.1, 0.1)}, "noise_std"),
        (SpatialAugConfig, {"scale": (0.0, 1.0)}, "scale"),
        (SpatialAugConfig, {"rotation_deg": -1}, "rotation_deg"),
    ],
)
def test_bad_config(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


def test_warp_shape_checks():
    with pytest.raises(ValueError, match="theta"):
        warp_query(torch.zeros(2, 1, 4, 4, 4), torch.zeros(2, 1, 4, 4, 4), torch.zeros(1, 3, 4))
    with pytest.raises(ValueError, match="masks"):
        warp_query(torch.zeros(2, 1, 4, 4, 4), torch.zeros(2, 1, 4, 4, 2), torch.zeros(2, 3, 4))
