"""The interface between a pretext task (MASS, MIM, MiM) and the shared trainer.

A task supplies the model, a CPU sample function and a device-side loss; the
trainer (:func:`mass_core.pretrain.trainer.train`) supplies everything else:
data loading, optimisation, EMA, checkpoints, resume, DDP and logging.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
from torch import nn

from mass_core.pretrain.optim import build_optimizer, build_scheduler

__all__ = ["PretextTask"]


class PretextTask(abc.ABC):
    """A self-supervised pretext task for the shared trainer.

    Subclasses set ``method`` (the name written into checkpoints, e.g.
    ``"mass"``) and implement the five methods below. Conventions:

    - the model holds the shared :class:`~mass_core.models.encoder.ResidualEncoder`
      as its attribute ``encoder`` (that is what ``encoder.pt`` saves);
    - :meth:`sample` is a pure function of ``(seed, step, index)``, so that
      resumed and distributed runs draw the same data (no hidden RNG state);
    - :meth:`compute_loss` calls ``model(...)`` (never submodules directly), so
      that DDP sees the forward pass.
    """

    method: ClassVar[str]

    @abc.abstractmethod
    def model_config(self) -> dict[str, Any]:
        """The model's shape as plain types; stored in checkpoints and compared on resume.

        Must hold the key ``"encoder"`` with ``EncoderConfig.to_dict()``.
        """

    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """A freshly initialised model (the trainer seeds torch's RNG first)."""

    @abc.abstractmethod
    def sample(self, seed: int, step: int, index: int) -> dict[str, Any]:
        """Training sample ``index`` of global step ``step`` as numpy arrays / numbers.

        Runs in data-loader workers; the trainer collates samples with
        ``torch.utils.data.default_collate``.
        """

    @abc.abstractmethod
    def make_batch(self, batch: dict[str, torch.Tensor], device: torch.device) -> Any:
        """Move a collated batch to ``device`` and apply device-side augmentation."""

    @abc.abstractmethod
    def compute_loss(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """Scalar losses; key ``"loss"`` is back-propagated, all keys are logged."""

    def validate(self, model: nn.Module, device: torch.device, step: int) -> dict[str, float]:
        """Held-out scores of ``model`` (the EMA weights) after ``step`` steps, logged to ``validation.csv``; none by default.

        Called on the main process every ``train.validate_every`` steps (and
        before the first); it must not change the model's weights.
        """
        return {}

    def configure_optimization(self, model: nn.Module, config: Any) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        """Optimiser and per-step schedule over ``model``; by default those ``config`` (a ``TrainConfig``) names."""
        optimizer = build_optimizer(model, config.optimizer, config.lr, config.weight_decay)
        return optimizer, build_scheduler(optimizer, config.lr, config.steps, config.warmup_fraction)

    def crop_size(self) -> tuple[int, int, int] | None:
        """The ``(X, Y, Z)`` crop in voxels the model trains on, recorded in checkpoints for inference; ``None`` records none."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """What the task itself must carry across a resume (plain types and tensors); nothing by default."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
