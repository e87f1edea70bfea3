"""The shared 3D residual U-Net encoder: the part of every pretext model that transfers.

MASS, MIM, MiM and every downstream model (segmentation finetuning, in-context
segmentation, frozen-encoder classification) build this one class, so that the
results compare pretraining and not backbones.

State-dict keys (stable; ``encoder.pt`` holds exactly these, no ``module.``):

- ``stem.conv.weight``, ``stem.conv.bias``: 3x3x3 convolution, ``in_channels -> channels[0]``.
- ``stages.{s}.{b}.norm1.weight|bias``, ``stages.{s}.{b}.conv1.conv.weight|bias``,
  ``stages.{s}.{b}.norm2.weight|bias``, ``stages.{s}.{b}.conv2.conv.weight|bias``:
  residual block ``b`` of stage ``s`` (``s = 0..len(channels)-1``).
- ``stages.{s}.0.shortcut.conv.weight|bias``: 1x1x1 projection of the first
  block of every stage ``s > 0`` (which halves the resolution with stride 2).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.utils import get_act_layer
from torch import nn

from mass_core.config_section import from_section

__all__ = ["EncoderConfig", "InstanceNorm", "PreActResBlock", "ResidualEncoder", "conv_channels_last", "instance_norm", "norm_act"]

# nnU-Net's choices: InstanceNorm is per sample (so folding masks or views into
# the batch never couples them) and LeakyReLU keeps small negative gradients.
_ACT = ("leakyrelu", {"negative_slope": 0.01})


# Below this many voxels per call (batch x spatial) a CPU convolution gains
# less from the channels-last layout than the two layout changes cost.
_CHANNELS_LAST_MIN_VOXELS = 32**3


def conv_channels_last(conv: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``, run in the channels-last layout where that is faster; the result is contiguous.

    oneDNN's CPU 3x3x3 convolution with 8-16 channels on 32^3 maps runs about
    2x faster, forward plus backward, on channels-last input (one thread,
    ``benchmarks/bench_pretrain.py``); with one input channel, at 16^3 or
    below, or on a GPU it gains nothing, so ``x`` is passed unchanged there.
    """
    if x.device.type == "cpu" and x.shape[1] >= 8 and x.shape[0] * x[0, 0].numel() >= _CHANNELS_LAST_MIN_VOXELS:
        return conv(_ChannelsLast.apply(x)).contiguous()
    return conv(x)


class _ChannelsLast(torch.autograd.Function):
    """``x.contiguous(memory_format=channels_last_3d)`` whose gradient comes back contiguous.

    The plain layout change passes the convolution's channels-last input
    gradient on unchanged, and every elementwise backward op before it then
    mixes layouts (LeakyReLU's backward ran 4x slower).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last_3d)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


class InstanceNorm(nn.InstanceNorm3d):
    """Affine ``nn.InstanceNorm3d`` (same parameters and state-dict keys), computed as a GroupNorm of one channel per group.

    The statistics are the same; torch's CPU GroupNorm kernels run forward
    plus backward about 2x faster than InstanceNorm's, which runs batch norm
    over a reshaped batch.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return instance_norm(x, self.weight, self.bias, self.eps)


def instance_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-sample, per-channel normalisation of ``x`` ``(B, C, ...)`` with affine ``weight`` and ``bias`` ``(C,)``."""
    return F.group_norm(x, x.shape[1], weight, bias, eps)


def norm_act(channels: int) -> nn.Sequential:
    """InstanceNorm + LeakyReLU over ``channels``: the pre-activation used throughout."""
    return nn.Sequential(InstanceNorm(channels), get_act_layer(_ACT))


@dataclass(frozen=True)
class EncoderConfig:
    """Shape of a :class:`ResidualEncoder` (config key ``pretrain.encoder``).

    Args:
        channels: feature channels per stage; stage ``s`` works at ``1/2**s`` of
            the input resolution. ``(8, 16, 32, 64)`` is the CPU default,
            ``(32, 64, 128, 256, 512)`` the paper's.
        blocks_per_stage: residual blocks per stage, one int for all stages or
            one per stage.
        in_channels: image channels (1 for CT/MR/PET).

    Example:
        >>> EncoderConfig(channels=(8, 16, 32), blocks_per_stage=1).downsampling_factor
        4
    """

    channels: tuple[int, ...] = (8, 16, 32, 64)
    blocks_per_stage: tuple[int, ...] | int = 1
    in_channels: int = 1

    def __post_init__(self) -> None:
        channels = tuple(int(c) for c in self.channels)
        if not channels or min(channels) < 1:
            raise ValueError(f"channels must be a non-empty sequence of positive ints, got {self.channels!r}")
        blocks = self.blocks_per_stage
        blocks = (int(blocks),) * len(channels) if isinstance(blocks, int) else tuple(int(b) for b in blocks)
        if len(blocks) != len(channels) or min(blocks) < 1:
            raise ValueError(f"blocks_per_stage must be a positive int or one per stage ({len(channels)}), got {self.blocks_per_stage!r}")
        if self.in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {self.in_channels}")
        # Normalised so that configs from YAML (lists) and code (tuples) compare equal.
        object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "blocks_per_stage", blocks)

    @property
    def downsampling_factor(self) -> int:
        """Ratio of input to deepest-feature size; input sizes must be multiples of it."""
        return 2 ** (len(self.channels) - 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, so that it can live in a ``weights_only`` checkpoint."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EncoderConfig:
        """Inverse of :meth:`to_dict`, and the builder from config section ``pretrain.encoder``; unknown keys raise ``ValueError``."""
        return from_section(cls, values, "pretrain.encoder")


class PreActResBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016): norm-act-conv twice plus a shortcut.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        stride: 2 halves the resolution; the shortcut then becomes a strided
            1x1x1 projection of the pre-activated input.

    Shapes: ``(B, in_channels, X, Y, Z) -> (B, out_channels, X/stride, Y/stride, Z/stride)``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.norm1 = InstanceNorm(in_channels)
        self.conv1 = Convolution(3, in_channels, out_channels, strides=stride, kernel_size=3, conv_only=True)
        self.norm2 = InstanceNorm(out_channels)
        self.conv2 = Convolution(3, out_channels, out_channels, kernel_size=3, conv_only=True)
        self.act = get_act_layer(_ACT)
        self.shortcut = (
            Convolution(3, in_channels, out_channels, strides=stride, kernel_size=1, conv_only=True)
            if stride != 1 or in_channels != out_channels
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act(self.norm1(x))
        skip = x if self.shortcut is None else self.shortcut(pre)
        return skip + self._second(conv_channels_last(self.conv1, pre))

    def forward_shared(self, x: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
        """``forward(cat([x, shared.repeat_interleave(R, 0)], 1))`` with ``R = len(x) // len(shared)``, cheaper.

        The channels of ``shared`` are the same for each of the ``R`` rows of
        ``x`` that follow one of its rows (a mask decoder's skip features,
        one per image, beside K per-mask maps). Normalisation is per channel
        and convolution linear, so their share of ``norm1``, ``conv1`` and the
        shortcut is computed once per row of ``shared`` and broadcast.
        """
        if self.shortcut is None or self.conv1.conv.stride != (1, 1, 1) or x.shape[1] + shared.shape[1] != self.norm1.num_features:
            raise ValueError(f"forward_shared needs a stride-1 block with a projection over {self.norm1.num_features} = x + shared channels, "
                             f"got {x.shape[1]} + {shared.shape[1]}")
        if len(x) % len(shared) or x.shape[2:] != shared.shape[2:]:
            raise ValueError(f"x {tuple(x.shape)} must hold a whole number of rows per row of shared {tuple(shared.shape)}, same spatial size")
        own, common = self._pre_activation(x, 0), self._pre_activation(shared, x.shape[1])
        repeats = len(x) // len(shared)

        def split(conv: nn.Conv3d) -> torch.Tensor:
            c = x.shape[1]
            out = conv_channels_last(lambda t: conv._conv_forward(t, conv.weight[:, :c], conv.bias), own)
            return (out.unflatten(0, (len(shared), repeats)) + conv._conv_forward(common, conv.weight[:, c:], None)[:, None]).flatten(0, 1)

        return split(self.shortcut.conv) + self._second(split(self.conv1.conv))

    def _pre_activation(self, x: torch.Tensor, first: int) -> torch.Tensor:
        """``act(norm1(.))`` of ``x`` standing for ``norm1``'s channels ``first ..``."""
        norm = self.norm1
        channels = slice(first, first + x.shape[1])
        return self.act(instance_norm(x, norm.weight[channels], norm.bias[channels], norm.eps))

    def _second(self, h: torch.Tensor) -> torch.Tensor:
        return conv_channels_last(self.conv2, self.act(self.norm2(h)))


class ResidualEncoder(nn.Module):
    """3D residual U-Net encoder returning one feature map per stage.

    Args:
        config: channels and depth, see :class:`EncoderConfig`.

    ``forward(x)`` takes ``x`` of shape ``(B, in_channels, X, Y, Z)`` with
    ``X, Y, Z`` multiples of ``config.downsampling_factor`` (any size: nothing
    is tied to the training crop) and returns ``[f_0, ..., f_L]`` with
    ``f_s`` of shape ``(B, channels[s], X/2**s, Y/2**s, Z/2**s)``. Features are
    pre-activation sums (not normalised): heads apply :func:`norm_act` first.

    Example:
        >>> enc = ResidualEncoder(EncoderConfig(channels=(4, 8), blocks_per_stage=1))
        >>> [tuple(f.shape) for f in enc(torch.zeros(2, 1, 16, 16, 8))]
        [(2, 4, 16, 16, 8), (2, 8, 8, 8, 4)]
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        channels = config.channels
        self.stem = Convolution(3, config.in_channels, channels[0], kernel_size=3, conv_only=True)
        self.stages = nn.ModuleList()
        for s, (width, depth) in enumerate(zip(channels, config.blocks_per_stage)):
            previous = channels[max(s - 1, 0)]
            blocks = [PreActResBlock(previous, width, stride=1 if s == 0 else 2)]
            blocks += [PreActResBlock(width, width) for _ in range(depth - 1)]
            self.stages.append(nn.Sequential(*blocks))

    @property
    def out_channels(self) -> tuple[int, ...]:
        """Channels of each returned feature map."""
        return self.config.channels

    def check_input(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise ``ValueError`` naming ``name`` unless ``x`` is ``(B, C, X, Y, Z)`` with divisible sizes."""
        factor = self.config.downsampling_factor
        if x.ndim != 5 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"{name} must have shape (B, {self.config.in_channels}, X, Y, Z), got {tuple(x.shape)}")
        if any(size % factor for size in x.shape[2:]):
            raise ValueError(f"{name} spatial size {tuple(x.shape[2:])} must be a multiple of {factor} in every axis")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(x)
        return self.from_stem(self.stem(x))

    def from_stem(self, h: torch.Tensor) -> list[torch.Tensor]:
        """The features of :meth:`forward` from the stem convolution's output ``h`` ``(B, channels[0], X, Y, Z)``."""
        features = []
        for stage in self.stages:
            h = stage(h)
            features.append(h)
        return features

