"""MiM baseline: hierarchical "mask in mask" modelling after Zhuang et al. (2024).

A sample holds ``levels`` nested views of one region: level 0 is a large
region downsampled to the crop size; each next level is a box covering half
of the previous level's extent per axis, at twice its resolution, so the
finest level is at the native spacing. Every level is masked and
reconstructed at once (the MIM loss per level), and adjacent levels are
aligned: the finer level's pooled deepest features, through a predictor, must
match the features of the same box pooled from the coarser level (cosine
distance, coarse side detached as in SimSiam). The target is the encoder's
own features rather than a learned projection of them: a projector trained
only by this loss can map everything to one vector and drive the loss to 0
without teaching the encoder anything, while encoder features must keep
varying to serve the reconstruction.

Choices where the paper leaves freedom: two levels by default; nested boxes
at random positions aligned to the encoder's feature grid (so that the box
maps onto whole feature cells of the coarser level); the same patch size and
ratio on every level (so finer levels hide physically smaller patches);
alignment weight 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mass_core.config_section import from_section
from mass_core.models.encoder import EncoderConfig
from mass_core.models.reconstruction import ReconstructionConfig, ReconstructionNet
from mass_core.pretrain.case_draw import CaseDraw
from mass_core.pretrain.masking import patch_mask
from mass_core.pretrain.mim import ImageCase, MimConfig, masked_error, random_flip, random_start
from mass_core.pretrain.sampler import read_crop, task_rng
from mass_core.pretrain.task import PretextTask

__all__ = ["HierBatch", "HierOutput", "MimHierConfig", "MimHierNet", "MimHierTask"]


@dataclass(frozen=True)
class MimHierConfig:
    """MiM settings (config keys ``pretrain.encoder`` and ``pretrain.mim_hier``).

    Args:
        mim: per-level masking and reconstruction settings (crop size, patch,
            ratio, loss, flips); ``crop_size`` is the input size of every level.
        levels: number of nested levels (>= 2).
        align_weight: weight of the cross-level alignment loss.
        projection_dim: hidden width of the predictor.
    """

    mim: MimConfig = field(default_factory=MimConfig)
    levels: int = 2
    align_weight: float = 1.0
    projection_dim: int = 64

    def __post_init__(self) -> None:
        if self.levels < 2:
            raise ValueError(f"levels must be >= 2, got {self.levels}")
        factor = self.mim.model.encoder.downsampling_factor
        if any(s % (2 * factor) for s in self.mim.crop_size):
            raise ValueError(f"crop_size {self.mim.crop_size} must be a multiple of twice the downsampling factor ({2 * factor}) for nested boxes")
        if self.align_weight < 0 or self.projection_dim < 1:
            raise ValueError(f"align_weight must be >= 0 and projection_dim >= 1, got {self.align_weight}, {self.projection_dim}")

    @property
    def box_cells(self) -> tuple[int, int, int]:
        """Size of a nested box in feature cells of the coarser level."""
        factor = self.mim.model.encoder.downsampling_factor
        return tuple(s // 2 // factor for s in self.mim.crop_size)  # type: ignore[return-value]

    def model_config(self) -> dict[str, Any]:
        """Plain-typed model shape, stored in checkpoints."""
        return {**self.mim.model.to_dict(), "levels": self.levels, "projection_dim": self.projection_dim, "box_cells": list(self.box_cells)}

    @classmethod
    def from_config(cls, encoder: Mapping[str, Any], section: Mapping[str, Any]) -> MimHierConfig:
        """Build from ``pretrain.encoder`` and ``pretrain.mim_hier`` (MIM keys plus ``levels``, ``align_weight``, ``projection_dim``)."""
        own = {f.name for f in fields(cls)} - {"mim"}
        mim = MimConfig.from_config(encoder, {k: v for k, v in section.items() if k not in own}, "pretrain.mim_hier")
        return from_section(cls, {k: v for k, v in section.items() if k in own}, "pretrain.mim_hier", {"mim": mim})


def _predictor(channels: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(channels, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, channels))


@dataclass
class HierOutput:
    """What :class:`MimHierNet` returns.

    Attributes:
        reconstruction: ``(B, L, C, X, Y, Z)`` per level.
        fine: ``(B, L-1, D)`` predictions from the pooled deepest features of levels ``1..L-1``.
        coarse: ``(B, L-1, D)`` deepest features of the same boxes pooled from levels ``0..L-2``.
    """

    reconstruction: torch.Tensor
    fine: torch.Tensor
    coarse: torch.Tensor


class MimHierNet(ReconstructionNet):
    """:class:`ReconstructionNet` over stacked levels, plus the cross-level alignment predictor.

    ``forward(images, masks, boxes)``: ``images`` and ``masks`` ``(B, L, C, X, Y, Z)``;
    ``boxes`` ``(B, L-1, 3)`` integer first feature cell of level ``l+1``'s box
    inside level ``l``'s deepest feature map.
    """

    def __init__(self, config: ReconstructionConfig, projection_dim: int, box_cells: Sequence[int]) -> None:
        super().__init__(config)
        self.box_cells = tuple(int(c) for c in box_cells)
        self.predictor = _predictor(config.encoder.channels[-1], projection_dim)

    def forward(self, images: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor) -> HierOutput:  # type: ignore[override]
        batch, levels = images.shape[:2]
        flat = super().forward(images.flatten(0, 1), masks.flatten(0, 1))
        deepest = flat.deepest.unflatten(0, (batch, levels))
        grid = deepest.shape[-3:]
        inside = torch.ones(batch, levels - 1, *grid, dtype=torch.bool, device=images.device)
        for axis in range(3):
            coord = torch.arange(grid[axis], device=images.device).view(*([1] * axis), -1, *([1] * (2 - axis)))
            start = boxes[..., axis].view(batch, levels - 1, 1, 1, 1)
            inside &= (coord >= start) & (coord < start + self.box_cells[axis])
        weights = inside.unsqueeze(2).to(deepest.dtype)
        pooled_boxes = (deepest[:, :-1] * weights).sum(dim=(-3, -2, -1)) / weights.sum(dim=(-3, -2, -1))
        pooled_fine = deepest[:, 1:].mean(dim=(-3, -2, -1))
        return HierOutput(flat.reconstruction.unflatten(0, (batch, levels)), self.predictor(pooled_fine), pooled_boxes)


@dataclass
class HierBatch:
    """A MiM batch on the device (shapes as in :class:`MimHierNet`)."""

    images: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor


def _downsample(block: np.ndarray, scale: int) -> np.ndarray:
    if scale == 1:
        return block
    x, y, z = (n // scale for n in block.shape)
    return block.reshape(x, scale, y, scale, z, scale).mean(axis=(1, 3, 5))


class MimHierTask(PretextTask):
    """MiM for the shared trainer.

    Args:
        cases: training images.
        config: levels, masking, loss and alignment settings.
        weights: per-case draw weights (the datasets' ``pretrain_weight``); ``None`` draws uniformly.
    """

    method: ClassVar[str] = "mim_hier"

    def __init__(self, cases: Sequence[ImageCase], config: MimHierConfig, weights: Sequence[float] | None = None) -> None:
        if not cases:
            raise ValueError("cases must not be empty")
        self.cases = list(cases)
        self.draw_case = CaseDraw(len(self.cases), weights)
        self.config = config

    def model_config(self) -> dict[str, Any]:
        return self.config.model_config()

    def build_model(self) -> MimHierNet:
        return MimHierNet(self.config.mim.model, self.config.projection_dim, self.config.box_cells)

    def sample(self, seed: int, step: int, index: int) -> dict[str, Any]:
        mim, levels = self.config.mim, self.config.levels
        factor = mim.model.encoder.downsampling_factor
        rng = task_rng(seed, step, index)
        image = self.cases[self.draw_case(rng)].open()
        size = np.array(mim.crop_size)
        native = size * 2 ** (levels - 1)
        region = read_crop(image, random_start(rng, image.shape, native), native).astype(np.float32)
        region = random_flip(rng, region, mim.flip)
        start, images, masks, boxes = np.zeros(3, dtype=int), [], [], []
        for level in range(levels):
            scale = 2 ** (levels - 1 - level)
            box = region[tuple(slice(s, s + n * scale) for s, n in zip(start, size))]
            images.append(_downsample(box, scale))
            masks.append(patch_mask(rng, mim.crop_size, mim.patch_size, mim.mask_ratio))
            if level < levels - 1:
                offset = np.array([rng.choice(np.arange(0, n // 2 + 1, factor)) for n in size])
                boxes.append(offset // factor)
                start = start + offset * scale
        return {"images": np.stack(images)[:, None], "masks": np.stack(masks)[:, None], "boxes": np.stack(boxes)}

    def make_batch(self, batch: dict[str, torch.Tensor], device: torch.device) -> HierBatch:
        return HierBatch(*(batch[name].to(device, non_blocking=True) for name in ("images", "masks", "boxes")))

    def compute_loss(self, model: torch.nn.Module, batch: HierBatch) -> dict[str, torch.Tensor]:
        output = model(batch.images.float(), batch.masks, batch.boxes)
        reconstruction = masked_error(output.reconstruction.float(), batch.images.float(), batch.masks, self.config.mim.loss)
        alignment = (1 - F.cosine_similarity(output.fine.float(), output.coarse.float().detach(), dim=-1)).mean()
        return {"loss": reconstruction + self.config.align_weight * alignment, "reconstruction": reconstruction, "alignment": alignment}
