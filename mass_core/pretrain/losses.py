"""The MASS loss: adaptive Tversky (Dice-type) + binary cross-entropy, 1:1, per mask.

Tversky index of one mask with soft counts TP, FP, FN over its voxels:
``TI = (TP + s) / (TP + alpha * FP + beta * FN + s)``. The paper adapts alpha
to each mask: ``alpha = clamp(FP / (FP + FN), 0.2, 0.8)``, ``beta = 1 - alpha``,
so whichever error dominates is penalised more; alpha is detached (a weight,
not something to optimise).

Absent masks: a mask whose query target is empty still counts in the BCE term
(it teaches "there is nothing to segment here"), but not in the Tversky term,
which is undefined (0/0) for an empty target and would push towards 1 for any
false positive voxel. Masks with ``valid = 0`` (padding slots) count nowhere.

Several processes (DDP): each rank's batch has its own numbers of present and
valid masks, so per-rank means, averaged by DDP, would weight the masks of
sparse ranks up. Given ``mean_over_ranks``, the two means divide by the counts'
mean over the ranks instead: each rank's loss is then its share of the global
batch's mean times the number of ranks, DDP's average of their gradients is
the gradient of that mean, and the average of their losses is its value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["LossTerms", "adaptive_alpha", "mass_loss", "tversky_loss"]

# MONAI's TverskyLoss defaults, so that the fixed-alpha case matches it.
SMOOTH = 1e-5


@dataclass
class LossTerms:
    """Scalar loss terms of one batch.

    Attributes:
        total: ``tversky + bce``, the value to back-propagate.
        tversky: mean adaptive Tversky loss over valid masks present in the target.
        bce: mean voxel-wise BCE over valid masks.
        present_fraction: share of valid masks whose target is not empty (detached).
    """

    total: torch.Tensor
    tversky: torch.Tensor
    bce: torch.Tensor
    present_fraction: torch.Tensor

    def as_dict(self) -> dict[str, torch.Tensor]:
        """``{"loss", "tversky", "bce", "present_fraction"}`` for the trainer's logs."""
        return {"loss": self.total, "tversky": self.tversky, "bce": self.bce, "present_fraction": self.present_fraction}


def _soft_counts(probs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dims = tuple(range(2, probs.ndim))
    tp = (probs * targets).sum(dims)
    fp = (probs * (1 - targets)).sum(dims)
    fn = ((1 - probs) * targets).sum(dims)
    return tp, fp, fn


def adaptive_alpha(probs: torch.Tensor, targets: torch.Tensor, low: float = 0.2, high: float = 0.8) -> torch.Tensor:
    """Per-mask ``alpha = clamp(FP / (FP + FN), low, high)``, detached.

    Args:
        probs: ``(B, K, X, Y, Z)`` probabilities in [0, 1].
        targets: ``(B, K, X, Y, Z)`` binary targets.
        low, high: clamp range (the paper: 0.2, 0.8).

    Returns:
        ``(B, K)``; 0.5 where a mask has neither FP nor FN.
    """
    if not 0 <= low <= high <= 1:
        raise ValueError(f"low and high must satisfy 0 <= low <= high <= 1, got {low}, {high}")
    _, fp, fn = _soft_counts(probs.detach(), targets)
    errors = fp + fn
    ratio = torch.where(errors > 0, fp / errors.clamp_min(torch.finfo(errors.dtype).tiny), torch.full_like(fp, 0.5))
    return ratio.clamp(low, high)


def tversky_loss(probs: torch.Tensor, targets: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """Per-mask Tversky loss ``1 - TI`` with FP weight ``alpha`` and FN weight ``1 - alpha``.

    Args:
        probs: ``(B, K, X, Y, Z)`` probabilities in [0, 1].
        targets: ``(B, K, X, Y, Z)`` binary targets.
        alpha: a float or a ``(B, K)`` tensor.

    Returns:
        ``(B, K)`` losses in [0, 1].
    """
    if probs.shape != targets.shape:
        raise ValueError(f"targets must have the shape of probs {tuple(probs.shape)}, got {tuple(targets.shape)}")
    tp, fp, fn = _soft_counts(probs, targets)
    index = (tp + SMOOTH) / (tp + alpha * fp + (1 - alpha) * fn + SMOOTH)
    return 1 - index


def _nonzero(counts: torch.Tensor) -> torch.Tensor:
    # An all-zero weight gives 0 (with a gradient path) rather than NaN. Not clamp_min(1): the
    # counts' mean over ranks may lie in (0, 1); on one process the two agree (counts are whole).
    return torch.where(counts > 0, counts, torch.ones_like(counts))


def mass_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, alpha_range: tuple[float, float] = (0.2, 0.8),
              mean_over_ranks: Callable[[torch.Tensor], torch.Tensor] | None = None) -> LossTerms:
    """Adaptive Tversky + BCE (1:1) of K mask predictions.

    Args:
        logits: ``(B, K, X, Y, Z)`` raw predictions.
        targets: ``(B, K, X, Y, Z)`` binary query targets (empty = mask absent from the query).
        valid: ``(B, K)`` bool or {0, 1}; 0 excludes a mask (padding slot) entirely.
        alpha_range: clamp range of the adaptive alpha.
        mean_over_ranks: in a run of several processes, maps this rank's ``(present, valid)``
            mask counts to their mean over the ranks (a collective, e.g.
            :func:`~mass_core.pretrain.distributed.mean_over_process_group`); ``None``: one process.

    Returns:
        :class:`LossTerms`; computed in float32 whatever the autocast dtype.

    Example:
        >>> logits = torch.zeros(1, 2, 4, 4, 4)
        >>> targets = torch.zeros(1, 2, 4, 4, 4); targets[0, 0, :2] = 1
        >>> terms = mass_loss(logits, targets, torch.tensor([[True, True]]))
        >>> round(terms.bce.item(), 4), round(terms.present_fraction.item(), 2)
        (0.6931, 0.5)
    """
    if logits.ndim < 3 or logits.shape != targets.shape:
        raise ValueError(f"logits and targets must both be (B, K, ...) of one shape, got {tuple(logits.shape)} and {tuple(targets.shape)}")
    if valid.shape != logits.shape[:2]:
        raise ValueError(f"valid must have shape (B, K) = {tuple(logits.shape[:2])}, got {tuple(valid.shape)}")
    logits = logits.float()
    targets = targets.float()
    valid = valid.float()
    dims = tuple(range(2, logits.ndim))
    probs = torch.sigmoid(logits)
    present = (targets.sum(dims) > 0).float() * valid
    tversky = tversky_loss(probs, targets, adaptive_alpha(probs, targets, *alpha_range))
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(dims)
    counts = torch.stack([present.sum(), valid.sum()]).detach()
    if mean_over_ranks is not None:
        counts = mean_over_ranks(counts)
    present_count, valid_count = _nonzero(counts)
    tversky_mean = (tversky * present).sum() / present_count
    bce_mean = (bce * valid).sum() / valid_count
    return LossTerms(
        total=tversky_mean + bce_mean,
        tversky=tversky_mean,
        bce=bce_mean,
        present_fraction=counts[0] / valid_count,
    )
