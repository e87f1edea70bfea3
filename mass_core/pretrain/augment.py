"""Augmentation split by cost: intensity in the data loader, spatial on the device.

MONAI's RandAffined on a 96^3 crop costs ~65 ms on one core, as much as a
small training step; crop + intensity in numpy costs a few ms. So the loader
only *draws* the affine (a 3x4 matrix, see :func:`random_affine`) and the
training step applies it to the whole batch at once with
``affine_grid``/``grid_sample`` (:func:`warp_query`), image and masks with
the same grid.

All randomness comes from a ``numpy.random.Generator`` passed in, so that a
sample is a pure function of its key (see :mod:`mass_core.pretrain.sampler`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.spatial.transform import Rotation

__all__ = [
    "STRONG_INTENSITY",
    "WEAK_INTENSITY",
    "IntensityAugConfig",
    "SpatialAugConfig",
    "WarpedQuery",
    "affine_theta",
    "augment_intensity",
    "random_affine",
    "warp_query",
]


def _check_range(name: str, value: tuple[float, float], low: float = -math.inf) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not low <= lo <= hi:
        raise ValueError(f"{name} must be a (low, high) pair with {low} <= low <= high, got {value!r}")
    return lo, hi


@dataclass(frozen=True)
class IntensityAugConfig:
    """Random intensity transforms of a z-scored crop, each applied with ``probability``.

    Args:
        probability: chance of each transform, independently (the paper: 0.2).
        brightness: range of a multiplicative factor.
        shift: range of an additive offset, in z-score units.
        gamma: range of the exponent applied to the crop rescaled to [0, 1].
        contrast: range of a factor stretching intensities about the crop mean.
        blur_sigma: range of the Gaussian blur sigma, in voxels.
        noise_std: range of the standard deviation of additive Gaussian noise, in z-score units.
    """

    probability: float = 0.2
    brightness: tuple[float, float] = (0.75, 1.25)
    shift: tuple[float, float] = (-0.1, 0.1)
    gamma: tuple[float, float] = (0.7, 1.5)
    contrast: tuple[float, float] = (0.75, 1.25)
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    noise_std: tuple[float, float] = (0.0, 0.1)

    def __post_init__(self) -> None:
        if not 0 <= self.probability <= 1:
            raise ValueError(f"probability must be in [0, 1], got {self.probability}")
        for name, low in (("brightness", 0.0), ("shift", -math.inf), ("gamma", 0.0), ("contrast", 0.0), ("blur_sigma", 0.0), ("noise_std", 0.0)):
            object.__setattr__(self, name, _check_range(name, getattr(self, name), low))


# The query's "strong" augmentation (the paper's list) and a mild one for the reference.
STRONG_INTENSITY = IntensityAugConfig()
WEAK_INTENSITY = IntensityAugConfig(
    brightness=(0.9, 1.1), shift=(-0.05, 0.05), gamma=(0.9, 1.1), contrast=(0.9, 1.1), blur_sigma=(0.0, 0.0), noise_std=(0.0, 0.03)
)


def augment_intensity(image: np.ndarray, rng: np.random.Generator, config: IntensityAugConfig) -> np.ndarray:
    """Apply brightness, shift, gamma, contrast, blur and noise, each with ``config.probability``.

    Args:
        image: ``(X, Y, Z)`` float32 z-scored crop (not modified).
        rng: source of all random draws.
        config: ranges and probability.

    Returns:
        A new float32 array of the same shape.
    """
    out = np.array(image, dtype=np.float32, copy=True)
    p = config.probability
    if rng.random() < p:
        out *= rng.uniform(*config.brightness)
    if rng.random() < p:
        out += rng.uniform(*config.shift)
    if rng.random() < p:
        # nnU-Net's recipe: gamma on the crop rescaled to [0, 1], then back.
        lo, hi = float(out.min()), float(out.max())
        if hi > lo:
            out = lo + (hi - lo) * ((out - lo) / (hi - lo)) ** rng.uniform(*config.gamma)
    if rng.random() < p:
        mean = out.mean()
        out = mean + (out - mean) * rng.uniform(*config.contrast)
    if rng.random() < p and config.blur_sigma[1] > 0:
        out = ndimage.gaussian_filter(out, sigma=rng.uniform(*config.blur_sigma), mode="nearest")
    if rng.random() < p:
        out += rng.uniform(*config.noise_std) * rng.standard_normal(out.shape, dtype=np.float32)
    return out.astype(np.float32, copy=False)


@dataclass(frozen=True)
class SpatialAugConfig:
    """Random affine of the query crop (scale and rotation about the crop centre).

    Args:
        probability: chance that a query is transformed at all.
        scale: range of the per-axis scale factor, drawn log-uniformly (the
            paper: 0.7..1.43, i.e. symmetric about 1 in log scale).
        rotation_deg: maximum absolute rotation about each axis, in degrees.
    """

    probability: float = 1.0
    scale: tuple[float, float] = (0.7, 1.43)
    rotation_deg: float = 30.0

    def __post_init__(self) -> None:
        if not 0 <= self.probability <= 1:
            raise ValueError(f"probability must be in [0, 1], got {self.probability}")
        object.__setattr__(self, "scale", _check_range("scale", self.scale, 1e-3))
        if not 0 <= self.rotation_deg <= 180:
            raise ValueError(f"rotation_deg must be in [0, 180], got {self.rotation_deg}")


def random_affine(rng: np.random.Generator, config: SpatialAugConfig, crop_size: tuple[int, int, int]) -> np.ndarray:
    """Draw an affine and return it as a ``theta`` for :func:`torch.nn.functional.affine_grid`.

    The transform maps each output voxel, in voxel units about the crop centre
    and in (X, Y, Z) order, to the input position ``A @ u`` with
    ``A = R @ diag(s)``: ``s > 1`` shows a larger field of view (zoom out).
    ``theta`` is ``A`` expressed in ``grid_sample``'s normalised coordinates
    (``align_corners=False``), whose components run (Z, Y, X).

    Args:
        rng: source of the random draws.
        config: ranges and probability.
        crop_size: ``(X, Y, Z)`` of the crop the grid is built for, in voxels.

    Returns:
        ``(3, 4)`` float32; the identity when the draw says "no transform".
    """
    matrix = np.eye(3)
    if rng.random() < config.probability:
        scales = np.exp(rng.uniform(*np.log(config.scale), size=3))
        angles = np.deg2rad(rng.uniform(-config.rotation_deg, config.rotation_deg, size=3))
        # Rz @ Ry @ Rx; the Y angle is negated to keep the matrices (hence the
        # tasks) of earlier runs, whose hand-written Ry turned the other way.
        matrix = Rotation.from_euler("xyz", angles * [1, -1, 1]).as_matrix() @ np.diag(scales)
    return affine_theta(matrix, crop_size)


def affine_theta(matrix: np.ndarray, crop_size: tuple[int, int, int]) -> np.ndarray:
    """``theta`` ``(3, 4)`` for ``affine_grid`` from a 3x3 matrix acting on centred (X, Y, Z) voxel coordinates."""
    half = np.asarray(crop_size, dtype=np.float64) / 2
    normalised = (matrix * half[None, :]) / half[:, None]  # D^-1 A D with D = diag(size / 2)
    theta = np.zeros((3, 4), np.float32)
    theta[:, :3] = normalised[::-1, ::-1]  # grid components are (Z, Y, X)
    return theta


@dataclass
class WarpedQuery:
    """Query image and targets after the spatial transform.

    Attributes:
        image: ``(B, 1, X, Y, Z)`` float32, zero outside the source crop.
        masks: ``(B, K, X, Y, Z)`` float32 in {0, 1}, zero outside the source crop.
    """

    image: torch.Tensor
    masks: torch.Tensor


def warp_query(image: torch.Tensor, masks: torch.Tensor, theta: torch.Tensor) -> WarpedQuery:
    """Apply per-sample affines to the query images and their masks with one shared grid.

    Masks are interpolated trilinearly and re-thresholded at 0.5, which keeps
    smoother boundaries than nearest-neighbour and matches thresholding the
    interpolated image when a mask is itself a threshold of a two-valued image.

    Args:
        image: ``(B, 1, X, Y, Z)`` float.
        masks: ``(B, K, X, Y, Z)`` binary (any dtype).
        theta: ``(B, 3, 4)`` from :func:`random_affine`.
    """
    if image.ndim != 5 or masks.ndim != 5 or masks.shape[0] != image.shape[0] or masks.shape[2:] != image.shape[2:]:
        raise ValueError(f"image (B, 1, X, Y, Z) and masks (B, K, X, Y, Z) must agree, got {tuple(image.shape)} and {tuple(masks.shape)}")
    if theta.shape != (image.shape[0], 3, 4):
        raise ValueError(f"theta must have shape ({image.shape[0]}, 3, 4), got {tuple(theta.shape)}")
    image = image.float()
    grid = F.affine_grid(theta.to(image), list(image.shape), align_corners=False)
    warped = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    warped_masks = F.grid_sample(masks.to(image.dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False) >= 0.5
    return WarpedQuery(image=warped, masks=warped_masks.to(image.dtype))
