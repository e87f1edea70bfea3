"""In-context segmentation network in the spirit of the MASS paper's "Iris".

Given a query image, a reference image and K binary masks on the reference,
predict K logit maps on the query ("segment in the query what mask k marks in
the reference"). Pieces:

- the shared :class:`~mass_core.models.encoder.ResidualEncoder`, applied to
  query and reference alike;
- a task encoder per token scale (the ``token_scales`` deepest stages): the
  masked average of the reference features is the foreground token; learned
  tokens, offset by it, read the reference features (tagged foreground or
  background by the mask) through cross-attention;
- a mask-agnostic U-Net pixel decoder on the query features (computed once
  per query, whatever K is);
- a per-mask decoder at the token scales: the query's decoded features and
  that mask's tokens exchange information by two-way cross-attention;
- the output: a dynamic 1x1 classifier made from the mask's tokens applied to
  the full-resolution pixel embedding, plus the per-mask decoder's coarse logit
  map upsampled;
- optionally (``prototypes``), a prototype term: the reference also goes
  through the pixel decoder, the masked averages of its pixel embedding inside
  and outside the mask are the foreground and background prototypes, and
  every query voxel adds ``scale * (cos(fg) - cos(bg))`` to its logit
  (the prototype matching of PANet/SSL-ALPNet). It gives the prediction a
  direct, parameter-free path from the reference mask, which a small model
  trained for a few hundred steps otherwise fails to learn: it segments what
  stands out in the query whatever the reference marks
  (``docs/pretraining.md``, "Does it read the reference?").

Why this split: the mask-conditioned part runs once per mask, so it is kept
at the coarse token scales; at full resolution only a (B, K, X, Y, Z) logit
map is per mask. With the paper's sizes (B=4, K=13, 128^3) a per-mask
full-resolution decoder would need tens of GB of activations.

Masks never see each other: the K masks are folded into the batch dimension
(``B * K`` rows) for everything after the encoder, and every layer there
(InstanceNorm, LayerNorm, attention) acts within one row. Nothing depends on
the crop size (no positional embedding): any input whose sizes are multiples
of the encoder's downsampling factor works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

from mass_core.config_section import from_section
from mass_core.models.encoder import EncoderConfig, PreActResBlock, ResidualEncoder, norm_act

__all__ = ["InContextConfig", "InContextSegmenter", "TaskTokens"]


@dataclass(frozen=True)
class InContextConfig:
    """Shape of an :class:`InContextSegmenter` (config keys ``pretrain.encoder`` and ``pretrain.mass.model``).

    Args:
        encoder: the shared encoder's shape.
        token_scales: number of deepest encoder stages that get task tokens and
            a per-mask decoder stage (the paper: 3).
        learned_tokens: learned tokens per mask and scale, besides the
            masked-average foreground token.
        heads: attention heads; must divide the channels of every token scale.
        prototypes: add the prototype-matching term to the logits.
    """

    encoder: EncoderConfig = EncoderConfig()
    token_scales: int = 3
    learned_tokens: int = 4
    heads: int = 4
    prototypes: bool = False

    def __post_init__(self) -> None:
        stages = len(self.encoder.channels)
        if not 1 <= self.token_scales <= stages:
            raise ValueError(f"token_scales must be in 1..{stages} (encoder stages), got {self.token_scales}")
        if self.learned_tokens < 0:
            raise ValueError(f"learned_tokens must be >= 0, got {self.learned_tokens}")
        widths = self.encoder.channels[stages - self.token_scales:]
        if self.heads < 1 or any(c % self.heads for c in widths):
            raise ValueError(f"heads must divide the channels of every token scale {widths}, got {self.heads}")

    @property
    def token_stages(self) -> list[int]:
        """Encoder stages that carry tokens, deepest first."""
        deepest = len(self.encoder.channels) - 1
        return list(range(deepest, deepest - self.token_scales, -1))

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, so that it can live in a ``weights_only`` checkpoint."""
        return {
            "encoder": self.encoder.to_dict(),
            "token_scales": self.token_scales,
            "learned_tokens": self.learned_tokens,
            "heads": self.heads,
            "prototypes": self.prototypes,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> InContextConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        return from_section(cls, values, "model")

    @classmethod
    def from_config(cls, encoder: Mapping[str, Any], model: Mapping[str, Any]) -> InContextConfig:
        """Build from the config sections ``pretrain.encoder`` and ``pretrain.mass.model``."""
        return from_section(cls, model, "pretrain.mass.model", {"encoder": EncoderConfig.from_dict(encoder)})


@dataclass
class TaskTokens:
    """Task tokens of K masks, computed once from references and reused for many queries.

    Attributes:
        tokens: one tensor per token scale, deepest first, each of shape
            ``(B, K, 1 + learned_tokens, C_s)``; token 0 is the masked-average
            foreground token.
        prototypes: ``(B, K, 2, C_0)`` background and foreground prototypes of
            the pixel embedding, or ``None`` for a model without the prototype term.
    """

    tokens: list[torch.Tensor]
    prototypes: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.tokens[0].shape[0]

    @property
    def num_masks(self) -> int:
        return self.tokens[0].shape[1]

    @staticmethod
    def mean(tasks: Sequence[TaskTokens]) -> TaskTokens:
        """Average the tokens of several references of the same K masks (reference ensembling)."""
        if not tasks:
            raise ValueError("tasks must hold at least one TaskTokens")
        shapes = {tuple(t.shape) for task in tasks for t in task.tokens[:1]}
        if len(shapes) != 1:
            raise ValueError(f"tasks must all have the same (B, K, tokens, C) shape, got {sorted(shapes)}")
        prototypes = None if tasks[0].prototypes is None else torch.stack([task.prototypes for task in tasks]).mean(dim=0)
        return TaskTokens([torch.stack(scale).mean(dim=0) for scale in zip(*(task.tokens for task in tasks))], prototypes)

    @staticmethod
    def concat(tasks: Sequence[TaskTokens]) -> TaskTokens:
        """Join the masks of several tasks of one batch size along K (one task per class, say)."""
        if not tasks:
            raise ValueError("tasks must hold at least one TaskTokens")
        prototypes = None if tasks[0].prototypes is None else torch.cat([task.prototypes for task in tasks], dim=1)
        return TaskTokens([torch.cat(scale, dim=1) for scale in zip(*(task.tokens for task in tasks))], prototypes)

    def select(self, order: Sequence[int]) -> TaskTokens:
        """The masks ``order`` (indices along K), in that order."""
        index = torch.as_tensor(list(order), dtype=torch.long, device=self.tokens[0].device)
        prototypes = None if self.prototypes is None else self.prototypes.index_select(1, index)
        return TaskTokens([t.index_select(1, index) for t in self.tokens], prototypes)


class _CrossAttention(nn.Module):
    """Pre-norm residual attention: ``x + Attn(LN(x), LN(context))``; shapes (N, L, C), (N, M, C)."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.norm_x = nn.LayerNorm(channels)
        self.norm_context = nn.LayerNorm(channels)
        self.attention = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return x + _attend(self.attention, self.norm_x(x), self.norm_context(context))


def _attend(attention: nn.MultiheadAttention, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """``attention(x, context, context)[0]`` for batch-first ``(N, L, C)`` and ``(N, M, C)``.

    ``nn.MultiheadAttention`` moves its inputs to (L, N, C) and back, copies
    that cost it about as much CPU time as the attention itself with these
    narrow heads; its weights are applied here to heads taken as strided views.
    """
    heads = attention.num_heads
    q, k, v = (F.linear(t, w, b).unflatten(-1, (heads, -1)).transpose(1, 2)
               for t, w, b in zip((x, context, context), attention.in_proj_weight.chunk(3), attention.in_proj_bias.chunk(3)))
    return attention.out_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))


class _FeedForward(nn.Module):
    """Pre-norm residual MLP on tokens (N, L, C)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, 2 * channels), nn.GELU(), nn.Linear(2 * channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(x)


class _TaskEncoder(nn.Module):
    """Tokens of one scale: ``(B, C, x, y, z)`` features + ``(B, K, x, y, z)`` soft masks -> ``(B, K, 1 + T, C)``."""

    def __init__(self, channels: int, learned_tokens: int, heads: int) -> None:
        super().__init__()
        self.features = norm_act(channels)
        self.learned = nn.Parameter(0.02 * torch.randn(learned_tokens, channels))
        # Rows: background, foreground. Tagging every reference voxel lets the
        # learned tokens contrast the structure with its surroundings.
        self.mask_embedding = nn.Parameter(0.02 * torch.randn(2, channels))
        self.read = _CrossAttention(channels, heads)
        self.mix = _CrossAttention(channels, heads)
        self.mlp = _FeedForward(channels)

    def forward(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        b, k = masks.shape[:2]
        f = self.features(features).flatten(2)  # (B, C, N)
        m = masks.flatten(2).to(f.dtype)  # (B, K, N)
        foreground = torch.einsum("bcn,bkn->bkc", f, m) / m.sum(-1, keepdim=True).clamp_min(1e-6)
        background, fg_tag = self.mask_embedding
        context = f.transpose(1, 2)[:, None] + background + m[..., None] * (fg_tag - background)  # (B, K, N, C)
        tokens = torch.cat([foreground[:, :, None], foreground[:, :, None] + self.learned], dim=2)
        tokens = tokens.flatten(0, 1)  # (B*K, 1 + T, C): masks folded into the batch
        tokens = self.read(tokens, context.flatten(0, 1))
        tokens = self.mlp(self.mix(tokens, tokens))
        return tokens.unflatten(0, (b, k))


class _TwoWayFusion(nn.Module):
    """Tokens read the query features, then every query voxel reads the tokens.

    Shapes: ``x`` (N, C, x, y, z), ``tokens`` (N, T, C), with N = B * K rows.
    """

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.token_read = _CrossAttention(channels, heads)
        self.token_mlp = _FeedForward(channels)
        self.voxel_read = _CrossAttention(channels, heads)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        voxels = x.flatten(2).transpose(1, 2)
        tokens = self.token_mlp(self.token_read(tokens, voxels))
        voxels = self.voxel_read(voxels, tokens)
        return voxels.transpose(1, 2).reshape(x.shape), tokens


def _upsample(in_channels: int, out_channels: int) -> Convolution:
    return Convolution(3, in_channels, out_channels, strides=2, kernel_size=2, padding=0, output_padding=0, is_transposed=True, conv_only=True)


class _PixelDecoder(nn.Module):
    """Mask-agnostic U-Net decoder: encoder features ``[f_0..f_L]`` -> decoded ``[d_0..d_L]`` (``d_L = f_L``)."""

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        self.up = nn.ModuleList(_upsample(channels[s + 1], channels[s]) for s in range(len(channels) - 1))
        self.blocks = nn.ModuleList(PreActResBlock(2 * channels[s], channels[s]) for s in range(len(channels) - 1))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        decoded = [features[-1]]
        for s in range(len(features) - 2, -1, -1):
            decoded.insert(0, self.blocks[s](torch.cat([self.up[s](decoded[0]), features[s]], dim=1)))
        return decoded


class _MaskDecoder(nn.Module):
    """Per-mask decoder over the token scales plus the dynamic classifier.

    ``forward(decoded, tokens)`` takes the pixel decoder's ``[d_0..d_L]`` with
    batch B and token tensors ``(B, K, T, C_s)`` (deepest first) and returns
    logits ``(B, K, X, Y, Z)``.
    """

    def __init__(self, config: InContextConfig) -> None:
        super().__init__()
        channels = config.encoder.channels
        stages = config.token_stages
        self.stages = stages
        self.fusion = nn.ModuleList(_TwoWayFusion(channels[s], config.heads) for s in stages)
        self.up = nn.ModuleList(_upsample(channels[s + 1], channels[s]) for s in stages[1:])
        self.blocks = nn.ModuleList(PreActResBlock(2 * channels[s], channels[s]) for s in stages[1:])
        finest = stages[-1]
        self.coarse_head = nn.Sequential(norm_act(channels[finest]), Convolution(3, channels[finest], 1, kernel_size=1, conv_only=True))
        self.pixel_norm = norm_act(channels[0])
        # Weights and bias of the 1x1 classifier on the pixel embedding, one set per mask.
        self.classifier = nn.Sequential(nn.LayerNorm(channels[finest]), nn.Linear(channels[finest], channels[finest]), nn.GELU(), nn.Linear(channels[finest], channels[0] + 1))
        # Cosine similarities lie in [-1, 1]; the scale lets the term reach confident logits (SSL-ALPNet uses 20).
        self.prototype_scale = nn.Parameter(torch.tensor(10.0)) if config.prototypes else None

    def forward(self, decoded: list[torch.Tensor], tokens: list[torch.Tensor], prototypes: torch.Tensor | None = None) -> torch.Tensor:
        b, k = tokens[0].shape[:2]
        h = decoded[self.stages[0]].repeat_interleave(k, dim=0)
        for i, stage in enumerate(self.stages):
            if i:
                # The skip features are the same for the K masks of an image: their share is computed once.
                h = self.blocks[i - 1].forward_shared(self.up[i - 1](h), decoded[stage])
            h, refined = self.fusion[i](h, tokens[i].flatten(0, 1))
        pixels = self.pixel_norm(decoded[0])  # (B, C_0, X, Y, Z)
        weights = self.classifier(refined.mean(dim=1)).unflatten(0, (b, k))  # (B, K, C_0 + 1)
        logits = torch.einsum("bcxyz,bkc->bkxyz", pixels, weights[..., :-1]) + weights[..., -1, None, None, None]
        coarse = self.coarse_head(h).unflatten(0, (b, k))[:, :, 0]
        if coarse.shape[2:] != logits.shape[2:]:
            coarse = F.interpolate(coarse, size=logits.shape[2:], mode="trilinear", align_corners=False)
        logits = logits + coarse
        if self.prototype_scale is not None:
            if prototypes is None:
                raise ValueError("this model has a prototype term: the task must carry prototypes")
            cosine = torch.einsum("bcxyz,bkpc->bkpxyz", F.normalize(pixels, dim=1), F.normalize(prototypes, dim=-1))
            logits = logits + self.prototype_scale * (cosine[:, :, 1] - cosine[:, :, 0])
        return logits

    def prototypes(self, decoded_full: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Background and foreground means ``(B, K, 2, C_0)`` of the pixel embedding of ``decoded_full`` ``(B, C_0, X, Y, Z)``."""
        pixels = self.pixel_norm(decoded_full).flatten(2)  # (B, C, N)
        m = masks.flatten(2).to(pixels.dtype)  # (B, K, N)
        inside = torch.einsum("bcn,bkn->bkc", pixels, m) / m.sum(-1, keepdim=True).clamp_min(1e-6)
        outside = torch.einsum("bcn,bkn->bkc", pixels, 1 - m) / (1 - m).sum(-1, keepdim=True).clamp_min(1e-6)
        return torch.stack([outside, inside], dim=2)


class InContextSegmenter(nn.Module):
    """In-context segmentation: K reference masks -> K query logit maps.

    Args:
        config: see :class:`InContextConfig`.

    ``forward(query, reference, ref_masks)``:
        query: ``(B, 1, X, Y, Z)`` float image.
        reference: ``(B, 1, X', Y', Z')`` float image (may differ in size from the query).
        ref_masks: ``(B, K, X', Y', Z')`` binary (or soft, in [0, 1]) masks on the reference.
        Returns logits ``(B, K, X, Y, Z)``; ``sigmoid > 0.5`` is the predicted mask.

    For sliding-window inference compute the tokens once with
    :meth:`encode_task` (optionally averaging several references with
    :meth:`TaskTokens.mean`) and call :meth:`segment` for every window.

    Example:
        >>> model = InContextSegmenter(InContextConfig(EncoderConfig((4, 8, 8)), token_scales=2, heads=2))
        >>> x = torch.randn(1, 1, 16, 16, 16)
        >>> model(x, x, (x > 0).float().repeat(1, 3, 1, 1, 1)).shape
        torch.Size([1, 3, 16, 16, 16])
    """

    def __init__(self, config: InContextConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ResidualEncoder(config.encoder)
        channels = config.encoder.channels
        self.task_encoders = nn.ModuleList(_TaskEncoder(channels[s], config.learned_tokens, config.heads) for s in config.token_stages)
        self.pixel_decoder = _PixelDecoder(channels)
        self.mask_decoder = _MaskDecoder(config)

    def encode_task(self, reference: torch.Tensor, ref_masks: torch.Tensor) -> TaskTokens:
        """Task tokens of ``ref_masks`` ``(B, K, X, Y, Z)`` on ``reference`` ``(B, 1, X, Y, Z)``."""
        self.encoder.check_input(reference, "reference")
        if ref_masks.ndim != 5 or ref_masks.shape[0] != reference.shape[0] or ref_masks.shape[2:] != reference.shape[2:]:
            raise ValueError(f"ref_masks must have shape (B, K, X, Y, Z) = ({reference.shape[0]}, K, {tuple(reference.shape[2:])}), got {tuple(ref_masks.shape)}")
        features = self.encoder(reference)
        masks = ref_masks.to(features[0].dtype)
        tokens = []
        for encoder, stage in zip(self.task_encoders, self.config.token_stages):
            # Area downsampling: a voxel half inside the mask counts half.
            scaled = F.avg_pool3d(masks, kernel_size=2**stage) if stage else masks
            tokens.append(encoder(features[stage], scaled))
        prototypes = self.mask_decoder.prototypes(self.pixel_decoder(features)[0], masks) if self.config.prototypes else None
        return TaskTokens(tokens, prototypes)

    def segment(self, query: torch.Tensor, task: TaskTokens) -> torch.Tensor:
        """Logits ``(B, K, X, Y, Z)`` for ``query`` ``(B, 1, X, Y, Z)``.

        ``task`` must have batch size B, or 1 to apply the same tokens to every query.
        """
        self.encoder.check_input(query, "query")
        b = query.shape[0]
        if task.batch_size not in (1, b):
            raise ValueError(f"task has batch size {task.batch_size}, expected 1 or the query's {b}")
        tokens = [t.expand(b, *t.shape[1:]) for t in task.tokens]
        prototypes = None if task.prototypes is None else task.prototypes.expand(b, *task.prototypes.shape[1:])
        return self.mask_decoder(self.pixel_decoder(self.encoder(query)), tokens, prototypes)

    def forward(self, query: torch.Tensor, reference: torch.Tensor, ref_masks: torch.Tensor) -> torch.Tensor:
        return self.segment(query, self.encode_task(reference, ref_masks))
