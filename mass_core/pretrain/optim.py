"""Optimiser and learning-rate schedule of the shared trainer.

The paper trains with LAMB and a one-cycle schedule (max 2e-3, 5% warm-up).
LAMB is in neither torch nor MONAI, and the usual packages for it (apex,
timm) would be heavy dependencies for ~30 lines, so :class:`Lamb` is written
out here after You et al. (2020), "Large batch optimization for deep learning".
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import OneCycleLR

__all__ = ["Lamb", "build_optimizer", "build_scheduler"]


class Lamb(torch.optim.Optimizer):
    """LAMB: Adam's update rescaled per parameter tensor by the trust ratio ``||w|| / ||update||``.

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        betas: Adam's moment decay rates.
        eps: added to the second-moment root.
        weight_decay: decoupled weight decay, part of the update (as in the paper).

    The trust ratio is 1 where either norm is 0 (fresh zero-initialised
    tensors), so such parameters take a plain Adam step.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.0) -> None:
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if eps <= 0 or weight_decay < 0:
            raise ValueError(f"eps must be > 0 and weight_decay >= 0, got {eps}, {weight_decay}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch's signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            beta1, beta2 = group["betas"]
            states = [self.state[p] for p in params]
            for state, p in zip(states, params):
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                state["step"] += 1
            # All tensors of a group step together; foreach ops keep the
            # Python overhead per step, not per tensor.
            step = states[0]["step"]
            grads = [p.grad for p in params]
            exp_avg = [s["exp_avg"] for s in states]
            exp_avg_sq = [s["exp_avg_sq"] for s in states]
            torch._foreach_lerp_(exp_avg, grads, 1 - beta1)
            torch._foreach_mul_(exp_avg_sq, beta2)
            torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
            denominator = torch._foreach_sqrt(torch._foreach_div(exp_avg_sq, 1 - beta2**step))
            torch._foreach_add_(denominator, group["eps"])
            updates = torch._foreach_div(exp_avg, denominator)
            torch._foreach_div_(updates, 1 - beta1**step)
            if group["weight_decay"]:
                torch._foreach_add_(updates, params, alpha=group["weight_decay"])
            weight_norms = torch.stack(torch._foreach_norm(params))
            update_norms = torch.stack(torch._foreach_norm(updates))
            trust = torch.where((weight_norms > 0) & (update_norms > 0), weight_norms / update_norms, torch.ones_like(weight_norms))
            torch._foreach_mul_(updates, list((-group["lr"] * trust).unbind()))
            torch._foreach_add_(params, updates)
        return loss


def _parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    # Biases and norm scales (tensors with < 2 dims) carry no decay:
    # shrinking them towards 0 only fights the normalisation.
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """``"lamb"`` (the paper's) or ``"adamw"`` over ``model``'s trainable parameters.

    Args:
        model: the (unwrapped) model.
        name: ``"lamb"`` or ``"adamw"``.
        lr: base learning rate (the one-cycle schedule then drives it).
        weight_decay: applied to tensors with two or more dimensions only.
    """
    groups = _parameter_groups(model, weight_decay)
    if name == "lamb":
        return Lamb(groups, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"optimizer must be 'lamb' or 'adamw', got {name!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, max_lr: float, total_steps: int, warmup_fraction: float) -> OneCycleLR:
    """One-cycle schedule: cosine warm-up to ``max_lr`` over ``warmup_fraction`` of the steps, then cosine decay.

    Stepped once per optimiser step; its state is part of every checkpoint.
    The warm-up lasts at least two steps: torch's OneCycleLR divides by zero
    for a shorter one (short test runs).
    """
    if total_steps < 4:
        raise ValueError(f"total_steps must be >= 4 for a one-cycle schedule, got {total_steps}")
    if not 0 < warmup_fraction < 0.5:
        raise ValueError(f"warmup_fraction must be in (0, 0.5), got {warmup_fraction}")
    return OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=max(warmup_fraction, 2 / total_steps))
