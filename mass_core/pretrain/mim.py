"""MIM baseline: masked image modelling after Chen et al. (WACV 2023).

Random cubic patches of a crop are hidden (replaced by a learned token at the
encoder's input), and a light decoder predicts their raw (z-scored) voxel
values; the loss counts hidden voxels only. Chen et al. found a high masking
ratio with a small patch best for 3D medical images, and L1 slightly ahead of
L2: the defaults follow (ratio 0.7, patch = the encoder's downsampling
factor, L1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch

from mass_core.config_section import from_section
from mass_core.models.encoder import EncoderConfig
from mass_core.models.reconstruction import ReconstructionConfig, ReconstructionNet
from mass_core.pretrain.case_draw import CaseDraw
from mass_core.pretrain.masking import patch_mask
from mass_core.pretrain.sampler import read_crop, task_rng
from mass_core.pretrain.task import PretextTask

__all__ = ["ImageCase", "MimBatch", "MimConfig", "MimTask", "ReconstructionScore", "masked_error", "random_start", "score_reconstruction"]

LOSSES = ("l1", "l2")


@dataclass(frozen=True)
class ImageCase:
    """A standardized case's float32 ``(X, Y, Z)`` image, opened through mmap on use."""

    case_id: str
    image: Path

    def open(self) -> np.ndarray:
        return np.load(self.image, mmap_mode="r")


@dataclass(frozen=True)
class MimConfig:
    """MIM settings (config keys ``pretrain.encoder`` and ``pretrain.mim``).

    Args:
        model: encoder shape and mask-token choice.
        crop_size: training crop ``(X, Y, Z)`` in voxels (multiples of ``patch_size``
            and of the encoder's downsampling factor).
        patch_size: edge of a masking patch in voxels; 0 means the encoder's
            downsampling factor.
        mask_ratio: share of patches hidden.
        loss: ``"l1"`` or ``"l2"`` on hidden voxels.
        flip: random flips along each axis.
    """

    model: ReconstructionConfig = field(default_factory=ReconstructionConfig)
    crop_size: tuple[int, int, int] = (32, 32, 32)
    patch_size: int = 0
    mask_ratio: float = 0.7
    loss: str = "l1"
    flip: bool = True

    # Read by from_config into model (the mask token is part of the network).
    OUTSIDE_KEYS = ("learned_mask_token",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop_size", tuple(int(s) for s in self.crop_size))
        if self.patch_size < 0:
            raise ValueError(f"patch_size must be >= 0 (0: the encoder's downsampling factor), got {self.patch_size}")
        if self.patch_size == 0:
            object.__setattr__(self, "patch_size", self.model.encoder.downsampling_factor)
        factor = self.model.encoder.downsampling_factor
        if len(self.crop_size) != 3 or any(s % factor or s % self.patch_size for s in self.crop_size):
            raise ValueError(f"crop_size {self.crop_size} must be three multiples of the downsampling factor {factor} and of patch_size {self.patch_size}")
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")

    @classmethod
    def from_config(cls, encoder: Mapping[str, Any], section: Mapping[str, Any], name: str = "pretrain.mim") -> MimConfig:
        """Build from the config sections ``pretrain.encoder`` and ``name`` (the method's section)."""
        learned = bool(section.get("learned_mask_token", ReconstructionConfig.learned_mask_token))
        return from_section(cls, section, name, {"model": ReconstructionConfig(EncoderConfig.from_dict(encoder), learned)})


def random_start(rng: np.random.Generator, shape: Sequence[int], size: Sequence[int]) -> tuple[int, int, int]:
    """Uniform crop origin inside ``shape``; a crop larger than the volume is centred (and zero-padded by ``read_crop``)."""
    return tuple(int(rng.integers(0, dim - n + 1)) if dim >= n else -((n - dim) // 2) for dim, n in zip(shape, size))  # type: ignore[return-value]


def random_flip(rng: np.random.Generator, array: np.ndarray, enabled: bool) -> np.ndarray:
    """Flip the last three axes of ``array`` with probability 0.5 each (always drawn, so the stream does not depend on ``enabled``)."""
    axes = [array.ndim - 3 + a for a in range(3) if rng.random() < 0.5]
    return np.ascontiguousarray(np.flip(array, axes)) if enabled and axes else array


@dataclass
class MimBatch:
    """A MIM batch on the device: ``image`` ``(B, 1, X, Y, Z)`` and ``mask`` ``(B, 1, X, Y, Z)`` (1 = hidden)."""

    image: torch.Tensor
    mask: torch.Tensor


def masked_error(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, loss: str) -> torch.Tensor:
    """Mean L1 or squared error over the voxels where ``mask`` is 1."""
    error = (prediction - target).abs() if loss == "l1" else (prediction - target) ** 2
    hidden = mask.to(error.dtype).expand_as(error)
    return (error * hidden).sum() / hidden.sum().clamp_min(1.0)


class MimTask(PretextTask):
    """MIM for the shared trainer.

    Args:
        cases: training images.
        config: model, masking and loss settings.
        weights: per-case draw weights (the datasets' ``pretrain_weight``); ``None`` draws uniformly.
    """

    method: ClassVar[str] = "mim"

    def __init__(self, cases: Sequence[ImageCase], config: MimConfig, weights: Sequence[float] | None = None) -> None:
        if not cases:
            raise ValueError("cases must not be empty")
        self.cases = list(cases)
        self.draw_case = CaseDraw(len(self.cases), weights)
        self.config = config

    def model_config(self) -> dict[str, Any]:
        return self.config.model.to_dict()

    def build_model(self) -> ReconstructionNet:
        return ReconstructionNet(self.config.model)

    def sample(self, seed: int, step: int, index: int) -> dict[str, Any]:
        rng = task_rng(seed, step, index)
        image = self.cases[self.draw_case(rng)].open()
        size = self.config.crop_size
        crop = read_crop(image, random_start(rng, image.shape, size), size).astype(np.float32)
        crop = random_flip(rng, crop, self.config.flip)
        mask = patch_mask(rng, size, self.config.patch_size, self.config.mask_ratio)
        return {"image": crop[None], "mask": mask[None]}

    def make_batch(self, batch: dict[str, torch.Tensor], device: torch.device) -> MimBatch:
        return MimBatch(batch["image"].to(device, non_blocking=True).float(), batch["mask"].to(device, non_blocking=True))

    def compute_loss(self, model: torch.nn.Module, batch: MimBatch) -> dict[str, torch.Tensor]:
        output = model(batch.image, batch.mask)
        return {"loss": masked_error(output.reconstruction.float(), batch.image, batch.mask, self.config.loss)}


@dataclass(frozen=True)
class ReconstructionScore:
    """Mean absolute error on hidden voxels of held-out crops.

    Attributes:
        model_l1: the network's reconstruction.
        mean_l1: the trivial predictor: each crop's mean visible intensity.
        n_crops: crops scored.
    """

    model_l1: float
    mean_l1: float
    n_crops: int


@torch.no_grad()
def score_reconstruction(model: ReconstructionNet, images: Sequence[os.PathLike | str], config: MimConfig, crops_per_image: int = 4, seed: int = 0) -> ReconstructionScore:
    """Compare ``model``'s reconstruction of hidden patches with the crop-mean predictor on ``images``."""
    model.eval()
    totals = np.zeros(2)
    count = 0
    for i, path in enumerate(images):
        image = np.load(path, mmap_mode="r")
        for j in range(crops_per_image):
            rng = task_rng(seed, i, j)
            crop = torch.from_numpy(read_crop(image, random_start(rng, image.shape, config.crop_size), config.crop_size).astype(np.float32))[None, None]
            mask = torch.from_numpy(patch_mask(rng, config.crop_size, config.patch_size, config.mask_ratio))[None, None]
            prediction = model(crop, mask).reconstruction
            baseline = crop[~mask].mean().expand_as(crop)
            totals += [masked_error(prediction, crop, mask, "l1").item(), masked_error(baseline, crop, mask, "l1").item()]
            count += 1
    return ReconstructionScore(float(totals[0] / count), float(totals[1] / count), count)
