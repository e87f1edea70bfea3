"""The finetuning network: the shared encoder plus a light U-Net decoder.

Every method (MASS, MIM, MiM, scratch) is finetuned with this one
architecture, and only the encoder's initial weights differ: the method's
``encoder.pt`` (for ``scratch`` the pipeline's random initialisation, see
:func:`mass_core.pretrain.run.init_scratch`; without a file the encoder is
initialised from the run's seed). The decoder is always initialised randomly
with the run's seed, so the same seed gives every method the same decoder. The segmentation tables therefore
compare pretraining and nothing else.

MASS has a second finetuning network, the paper's MASS-FT
(:class:`ClassPriorNet`): the whole pretrained in-context model, with one
learnable task per class (its "class prior") in place of reference crops.
Each prior starts as the mean task of its class over the labeled training
crops, so at step 0 the network is the in-context model given those crops as
references. The baselines have no in-context decoder to start from, so their
rows keep the encoder-only network; the encoder-only MASS row
(``mass_encoder``) separates what the pretext task did to the encoder from
what the rest of the in-context model adds.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
import torch
from monai.networks.blocks import Convolution
from torch import nn

from mass_core.models.encoder import EncoderConfig, ResidualEncoder, norm_act
from mass_core.evaluate.fewshot import load_incontext_segmenter, reference_tokens
from mass_core.models.incontext import InContextSegmenter, TaskTokens
from mass_core.pretrain.checkpoint import load_encoder

__all__ = ["ClassPriorNet", "SegmentationNet", "UNetDecoder", "build_class_prior_model", "build_segmentation_model"]


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


class ClassPriorNet(nn.Module):
    """MASS-FT: an in-context model whose K tasks are learnable class priors, as a K + 1 channel segmenter.

    Args:
        model: the pretrained in-context model (finetuned as a whole).
        priors: one task per foreground class, in class order (``B = 1``);
            copied into parameters.

    ``forward(x)`` returns ``(B, 1 + K, X, Y, Z)``: channel 0 is a constant
    0 logit for the background and channel ``k`` the in-context logit of class
    ``k``. A softmax over them is, for one class, exactly the in-context
    sigmoid, and its argmax assigns a voxel to the most confident class whose
    sigmoid exceeds 0.5 (the in-context threshold); so the network trains
    with the loss of every other method and its step-0 prediction is the
    in-context prediction of the references its priors came from.
    """

    def __init__(self, model: InContextSegmenter, priors: TaskTokens) -> None:
        super().__init__()
        if priors.batch_size != 1:
            raise ValueError(f"priors must have batch size 1, got {priors.batch_size}")
        self.model = model
        self.tokens = nn.ParameterList(nn.Parameter(t.detach().clone()) for t in priors.tokens)
        self.prototypes = None if priors.prototypes is None else nn.Parameter(priors.prototypes.detach().clone())

    @property
    def encoder(self) -> ResidualEncoder:
        return self.model.encoder

    @property
    def priors(self) -> TaskTokens:
        """The current class priors."""
        return TaskTokens(list(self.tokens), self.prototypes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model.segment(x, self.priors)
        return torch.cat([torch.zeros_like(logits[:, :1]), logits], dim=1)


def build_class_prior_model(checkpoint: str | os.PathLike, references: Mapping[str, tuple[np.ndarray, np.ndarray]],
                            classes: Sequence[int], crop: Sequence[int], device: torch.device,
                            source: str | os.PathLike = "the training cases") -> ClassPriorNet:
    """MASS-FT from a MASS training checkpoint, with priors from every labeled training case.

    Args:
        checkpoint: the MASS ``final.pt`` (its EMA weights are the starting point).
        references: the labeled training cases, case id -> (image, label map).
        classes: the dataset's foreground classes, in output-channel order.
        crop: reference crop size, centred on each class (the training crop).
        device: where the priors are computed.
        source: where ``references`` come from (the manifest), named in errors.

    A class absent from every training case gets the mean of the other priors:
    it has no example to start from, and training only ever tells it "not here".
    """
    model = load_incontext_segmenter(checkpoint).to(device)
    present = {int(c): [cid for cid, (_, label) in references.items() if np.any(np.asarray(label) == c)] for c in classes}
    chosen = {c: ids for c, ids in present.items() if ids}
    if not chosen:
        raise ValueError(f"{source}: no training case contains any of the classes {[int(c) for c in classes]}; "
                         "MASS-FT has nothing to start its priors from")
    known = reference_tokens(model, references, chosen, crop, device)
    fallback = TaskTokens.mean([known.select([i]) for i in range(known.num_masks)])
    index = {c: i for i, c in enumerate(chosen)}
    priors = TaskTokens.concat([known.select([index[c]]) if c in index else fallback for c in (int(c) for c in classes)])
    return ClassPriorNet(model.train(), priors)
