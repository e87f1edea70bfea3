"""Masked-image-modelling network: the shared encoder plus a light voxel decoder.

Used by the MIM and MiM pretext tasks. Chen et al. (WACV 2023) found that a
light decoder works best for masked image modelling, so the decoder is one
3x3x3 convolution from the deepest features followed by a sub-pixel shuffle
back to the input resolution (SimMIM's linear head, made 3D).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from monai.networks.blocks import SubpixelUpsample
from torch import nn

from mass_core.models.encoder import EncoderConfig, ResidualEncoder, norm_act

__all__ = ["ReconstructionConfig", "ReconstructionNet", "ReconstructionOutput"]


@dataclass(frozen=True)
class ReconstructionConfig:
    """Shape of a :class:`ReconstructionNet`.

    Args:
        encoder: the shared encoder's shape.
        learned_mask_token: replace masked voxels by a learned value (SimMIM);
            ``False`` replaces them by 0, the z-scored mean intensity.
    """

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    learned_mask_token: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain types, for ``weights_only`` checkpoints."""
        return {"encoder": self.encoder.to_dict(), "learned_mask_token": self.learned_mask_token}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ReconstructionConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(EncoderConfig.from_dict(values.get("encoder", {})), bool(values.get("learned_mask_token", True)))


@dataclass
class ReconstructionOutput:
    """What :class:`ReconstructionNet` returns.

    Attributes:
        reconstruction: ``(B, C, X, Y, Z)`` predicted voxel values.
        deepest: ``(B, channels[-1], X/f, Y/f, Z/f)`` deepest encoder features
            (``f`` the downsampling factor), normalised and activated.
    """

    reconstruction: torch.Tensor
    deepest: torch.Tensor


class ReconstructionNet(nn.Module):
    """Encoder + light decoder that predicts the voxels hidden by a mask.

    ``forward(image, mask)`` takes ``image`` ``(B, C, X, Y, Z)`` and ``mask``
    ``(B, 1, X, Y, Z)`` (1 where hidden); hidden voxels are replaced by the
    mask token before the encoder sees them.
    """

    def __init__(self, config: ReconstructionConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ResidualEncoder(config.encoder)
        self.mask_token = nn.Parameter(torch.zeros(1), requires_grad=config.learned_mask_token)
        deepest = config.encoder.channels[-1]
        self.head_norm = norm_act(deepest)
        self.decoder = SubpixelUpsample(3, deepest, config.encoder.in_channels, scale_factor=config.encoder.downsampling_factor,
                                        apply_pad_pool=False)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> ReconstructionOutput:
        if mask.shape[0] != image.shape[0] or mask.shape[1] != 1 or mask.shape[2:] != image.shape[2:]:
            raise ValueError(f"mask must have shape (B, 1, X, Y, Z) matching image {tuple(image.shape)}, got {tuple(mask.shape)}")
        hidden = mask.to(image.dtype)
        self.encoder.check_input(image, "image")
        token = self.mask_token.to(image.dtype)
        stem = self.encoder.stem(image * (1 - hidden) + token.detach() * hidden)
        if token.requires_grad:
            # The stem is linear in the token: stem(x + t * hidden) = stem(x) + t * conv(hidden), so
            # the token's gradient is the stem output's gradient against conv(hidden). That spares the
            # gradient of the stem's one-channel input, which oneDNN computes ~10x slower than the
            # forward convolution. The added term is zero; it only carries that gradient.
            conv = self.encoder.stem.conv
            stem = stem + (token - token.detach()) * conv._conv_forward(hidden.expand_as(image), conv.weight.detach(), None)
        deepest = self.head_norm(self.encoder.from_stem(stem)[-1])
        return ReconstructionOutput(self.decoder(deepest), deepest)
