"""Checkpoints: atomic writes, ``weights_only`` loading, clear errors on mismatch.

Two kinds of file (layout and keys in ``docs/pretraining.md``):

- training checkpoints (``latest.pt``, ``final.pt``): everything needed to
  continue the run bit for bit, plus the EMA weights used for evaluation;
- ``encoder.pt``: the EMA encoder alone, with its config, to reuse in other
  models. Keys are those of :class:`~mass_core.models.encoder.ResidualEncoder`
  (documented there), never prefixed by ``module.``.

All files hold only tensors and plain Python types, so they load with
``torch.load(path, weights_only=True)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from mass_core.atomic import atomic_path
from mass_core.models.encoder import EncoderConfig, ResidualEncoder

__all__ = [
    "CHECKPOINT_FORMAT",
    "ENCODER_FORMAT",
    "TrainingState",
    "load_checkpoint",
    "load_encoder",
    "load_state_dict_checked",
    "save_checkpoint",
    "save_encoder",
    "strip_wrapper_prefixes",
]

CHECKPOINT_FORMAT = "mass-checkpoint-v1"
ENCODER_FORMAT = "mass-encoder-v1"
# Prefixes that wrappers add to state-dict keys: DDP / DataParallel, torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class TrainingState:
    """What a training checkpoint holds.

    Attributes:
        method: pretext task name (``"mass"``, ``"mim"``, ...).
        model_config: the task's ``model_config()``.
        train_config: the run's ``TrainConfig`` as a dict.
        step: optimiser steps completed.
        model: online weights (unwrapped keys).
        ema: EMA weights, same keys as ``model``; the ones to evaluate.
        ema_updates: number of EMA updates so far.
        optimizer: ``optimizer.state_dict()``.
        scheduler: ``scheduler.state_dict()``.
        metrics: the ``metrics.csv`` rows logged up to ``step``.
        validation: the ``validation.csv`` rows (held-out checks) up to ``step``.
        task: the task's own resumable state (:meth:`~mass_core.pretrain.task.PretextTask.state_dict`).
        standardization: how the training cases were standardized, one record
            ``{"modality", "params", "cases"}`` per distinct setting
            (:func:`~mass_core.trained_standardization.training_standardization`);
            empty in checkpoints written before it was recorded. ``mass-core infer`` reads it.
        crop_size: the ``(X, Y, Z)`` crop in voxels the model was trained on
            (:meth:`~mass_core.pretrain.task.PretextTask.crop_size`; MASS:
            ``pretrain.mass.sampler.crop_size``); empty when the task records
            none and in checkpoints written before it was recorded.
            ``mass-core infer`` takes its reference crop and sliding window from it.
    """

    method: str
    model_config: dict[str, Any]
    train_config: dict[str, Any]
    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    ema_updates: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    metrics: list[dict[str, float]]
    validation: list[dict[str, float]] = field(default_factory=list)
    task: dict[str, Any] = field(default_factory=dict)
    standardization: list[dict[str, Any]] = field(default_factory=list)
    crop_size: list[int] = field(default_factory=list)


def strip_wrapper_prefixes(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Remove leading ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) from every key."""
    cleaned = {}
    for key, value in state_dict.items():
        while key.startswith(_WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        cleaned[key] = value
    return cleaned


def _save(path: Path, obj: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(path: str | os.PathLike, state: TrainingState) -> None:
    """Write a training checkpoint atomically (a reader never sees a partial file)."""
    _save(Path(path), {"format": CHECKPOINT_FORMAT, **state.__dict__})


def _load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise ValueError(f"{path} is not a readable weights-only torch checkpoint: {error}") from error


def _differences(found: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(found) | set(expected))
    return [f"{k}: checkpoint {found.get(k)!r}, expected {expected.get(k)!r}" for k in keys if found.get(k) != expected.get(k)]


def load_checkpoint(path: str | os.PathLike, method: str | None = None, model_config: Mapping[str, Any] | None = None) -> TrainingState:
    """Read a training checkpoint, checking that it fits what the caller expects.

    Args:
        path: a ``latest.pt`` / ``final.pt``.
        method: expected pretext task; ``None`` accepts any.
        model_config: expected model shape; ``None`` accepts any.

    Raises:
        ValueError: not a training checkpoint, or written by another method or
            for a model of another shape (the message lists the differences).
    """
    path = Path(path)
    raw = _load(path)
    if not isinstance(raw, dict) or raw.get("format") != CHECKPOINT_FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(f"{path} is not a MASS training checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT!r})")
    state = TrainingState(**{k: v for k, v in raw.items() if k != "format"})
    if method is not None and state.method != method:
        raise ValueError(f"{path} was written by pretext task {state.method!r}, not {method!r}; use another output folder or the matching method")
    if model_config is not None and dict(state.model_config) != dict(model_config):
        raise ValueError(f"{path} holds a model of another shape: " + "; ".join(_differences(state.model_config, model_config)))
    return state


def load_state_dict_checked(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """``module.load_state_dict`` (strict, wrapper prefixes stripped) with a readable ``ValueError``."""
    state_dict = strip_wrapper_prefixes(state_dict)
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        parts = [f"{label}: {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}" for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)) if items]
        raise ValueError(f"{source} does not fit {type(module).__name__} ({'; '.join(parts)})")
    module.load_state_dict(state_dict)


def save_encoder(path: str | os.PathLike, encoder: ResidualEncoder, method: str, step: int) -> None:
    """Write ``encoder.pt``: ``{"format", "method", "step", "encoder_config", "state_dict"}``."""
    state_dict = {k: v.detach().clone() for k, v in strip_wrapper_prefixes(encoder.state_dict()).items()}
    _save(Path(path), {"format": ENCODER_FORMAT, "method": method, "step": int(step), "encoder_config": encoder.config.to_dict(), "state_dict": state_dict})


def load_encoder(path: str | os.PathLike, config: EncoderConfig | None = None) -> ResidualEncoder:
    """Build the pretrained encoder from ``encoder.pt``, a training checkpoint or a bare state dict.

    Args:
        path: ``encoder.pt``; ``final.pt`` / ``latest.pt`` (the EMA encoder is
            taken); or a file holding an encoder state dict alone, possibly
            with ``module.`` prefixes (``config`` is then required).
        config: expected encoder shape; when given, a file built for another
            shape raises ``ValueError``.

    Example:
        >>> encoder = load_encoder("results/pretrain/mass/encoder.pt")
        >>> features = encoder(torch.zeros(1, 1, 64, 64, 64))  # [f_0, ..., f_L]
    """
    path = Path(path)
    raw = _load(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path} holds a {type(raw).__name__}, not an encoder or a checkpoint")
    if raw.get("format") == ENCODER_FORMAT:
        stored, state_dict = EncoderConfig.from_dict(raw["encoder_config"]), raw["state_dict"]
    elif raw.get("format") == CHECKPOINT_FORMAT:
        stored = EncoderConfig.from_dict(raw["model_config"]["encoder"])
        ema = strip_wrapper_prefixes(raw["ema"])
        state_dict = {k.removeprefix("encoder."): v for k, v in ema.items() if k.startswith("encoder.")}
    elif raw and all(isinstance(v, torch.Tensor) for v in raw.values()):
        if config is None:
            raise ValueError(f"{path} is a bare state dict; pass config to say which encoder it belongs to")
        stored, state_dict = config, raw
    else:
        raise ValueError(f"{path} is neither {ENCODER_FORMAT!r}, {CHECKPOINT_FORMAT!r} nor a state dict")
    if config is not None and config != stored:
        raise ValueError(f"{path} holds an encoder of another shape: " + "; ".join(_differences(stored.to_dict(), config.to_dict())))
    encoder = ResidualEncoder(stored)
    load_state_dict_checked(encoder, state_dict, str(path))
    return encoder
