"""Exponential moving average of the weights, the model used for evaluation (the paper: decay 0.99)."""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["build_ema"]


def build_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An EMA copy of ``model`` (unwrapped, not DDP): ``ema = decay * ema + (1 - decay) * w``.

    Call ``ema.update_parameters(model)`` after every optimiser step; the first
    call copies the weights. ``ema.module`` is the averaged model, with the
    same state-dict keys as ``model``. Buffers are averaged too, so the copy
    is self-contained whatever normalisation the model uses.
    """
    if not 0 <= decay < 1:
        raise ValueError(f"decay must be in [0, 1), got {decay}")
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    ema.requires_grad_(False)
    return ema
