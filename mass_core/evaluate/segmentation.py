"""The finetuning network: the shared encoder plus a light U-Net decoder.

Every method (MASS, MIM, MiM, scratch) is finetuned with this one
architecture, and only the encoder's initial weights differ: the method's
``encoder.pt`` (for ``scratch`` the pipeline's random initialisation, see
:func:`mass_core.pretrain.run.init_scratch`; without a file the encoder is
initialised from the run's seed). The decoder is always initialised randomly
with the run's seed, so the same seed gives every method the same decoder. The segmentation tables therefore
compare pretraining and nothing else.

This departs from the MASS paper, which finetunes its whole in-context model
(encoder, task encoder and decoders) for segmentation: the baselines have no
such decoder, so starting MASS from more pretrained layers than the others
would mix the effect of the pretext task with that of a larger pretrained
model.
"""

from __future__ import annotations

import os

import torch
from monai.networks.blocks import Convolution
from torch import nn

from mass_core.models.encoder import EncoderConfig, ResidualEncoder, norm_act
from mass_core.pretrain.checkpoint import load_encoder

__all__ = ["SegmentationNet", "UNetDecoder", "build_segmentation_model"]


class UNetDecoder(nn.Module):
    """Light U-Net decoder over the encoder's features ``[f_0, ..., f_L]``.

    At each stage ``s`` (deepest first) the coarser map is upsampled by a
    stride-2 transposed convolution to ``channels[s]``, the skip ``f_s`` is
    added (not concatenated), and one pre-activated 3x3x3 convolution refines
    the sum residually. Returns the full-resolution map ``(B, channels[0], X, Y, Z)``.

    Why this light: the full-resolution stage dominates the cost of a 3D
    U-Net on a CPU; addition and a single convolution per stage make a
    finetuning step about 40% cheaper than concatenation and a two-convolution
    residual block (measured on 48^3 crops), which the fixed CPU budget of the
    default pipeline turns into more steps.

    Args:
        channels: the encoder's channels per stage.
    """

    def __init__(self, channels: tuple[int, ...]) -> None:
        super().__init__()
        self.up = nn.ModuleList(
            Convolution(3, channels[s + 1], channels[s], strides=2, kernel_size=2, padding=0, output_padding=0,
                        is_transposed=True, conv_only=True)
            for s in range(len(channels) - 1)
        )
        self.refine = nn.ModuleList(
            nn.Sequential(norm_act(channels[s]), Convolution(3, channels[s], channels[s], kernel_size=3, conv_only=True))
            for s in range(len(channels) - 1)
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        h = features[-1]
        for s in range(len(features) - 2, -1, -1):
            h = self.up[s](h) + features[s]
            h = h + self.refine[s](h)
        return h


class SegmentationNet(nn.Module):
    """Residual U-Net for supervised segmentation: :class:`ResidualEncoder` + :class:`UNetDecoder` + 1x1 head.

    Args:
        encoder_config: shape of the shared encoder.
        num_outputs: output channels, background included (``1 + number of classes``).

    Shapes: ``(B, 1, X, Y, Z) -> (B, num_outputs, X, Y, Z)`` logits, with ``X, Y, Z``
    multiples of ``encoder_config.downsampling_factor``.

    Example:
        >>> net = SegmentationNet(EncoderConfig(channels=(4, 8)), num_outputs=3)
        >>> net(torch.zeros(1, 1, 16, 16, 8)).shape
        torch.Size([1, 3, 16, 16, 8])
    """

    def __init__(self, encoder_config: EncoderConfig, num_outputs: int) -> None:
        super().__init__()
        if num_outputs < 2:
            raise ValueError(f"num_outputs must be >= 2 (background and at least one class), got {num_outputs}")
        self.encoder = ResidualEncoder(encoder_config)
        self.decoder = UNetDecoder(encoder_config.channels)
        width = encoder_config.channels[0]
        self.head = nn.Sequential(norm_act(width), Convolution(3, width, num_outputs, kernel_size=1, conv_only=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder(self.encoder(x)))


def build_segmentation_model(
    num_outputs: int,
    encoder_config: EncoderConfig | None,
    encoder_weights: str | os.PathLike | None,
    seed: int,
) -> SegmentationNet:
    """A :class:`SegmentationNet` whose encoder starts from an ``encoder.pt``, or from a random initialisation.

    Args:
        num_outputs: output channels, background included.
        encoder_config: expected encoder shape. With ``encoder_weights`` it is
            checked against the file (a pretrained encoder of another shape
            raises ``ValueError``, so every method is finetuned with the same
            architecture); ``None`` takes the file's shape. Required without weights.
        encoder_weights: ``encoder.pt`` (or a training checkpoint) of any
            method, scratch included; ``None`` for an encoder initialised from ``seed``.
        seed: seeds the random initialisation (decoder, head, and the encoder
            without ``encoder_weights``), so methods with one seed share the decoder init.
    """
    if encoder_weights is None and encoder_config is None:
        raise ValueError("encoder_config is required when no encoder_weights are given")
    pretrained = load_encoder(encoder_weights, config=encoder_config) if encoder_weights is not None else None
    config = pretrained.config if pretrained is not None else encoder_config
    torch.manual_seed(seed)
    model = SegmentationNet(config, num_outputs)
    if pretrained is not None:
        model.encoder.load_state_dict(pretrained.state_dict())
    return model
