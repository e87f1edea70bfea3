"""The training loop shared by every pretext task (MASS, MIM, MiM) and by segmentation finetuning.

Pieces live in their own modules: the task (:mod:`.task`) gives model, data
and loss; :mod:`.optim` the optimiser and one-cycle schedule; :mod:`.ema` the
evaluation weights; :mod:`.checkpoint` the files; :mod:`.data` step-keyed
loading; :mod:`.distributed` the process group; :mod:`.metrics` the logs.

Run folder (``out_dir``):

- ``latest.pt`` every ``checkpoint_every`` steps and when stopping early;
  removed once ``final.pt`` is written;
- ``final.pt`` (training checkpoint with EMA weights) and ``encoder.pt`` (the
  EMA encoder alone) at the end;
- ``metrics.csv`` (and ``tensorboard/`` when TensorBoard is installed);
- ``validation.csv`` when ``validate_every`` is set;
- ``snapshots/step_<n>.pt`` (training checkpoints) at every step of
  ``snapshot_steps``, for learning curves over the pretraining budget.

Restarting :func:`train` with the same arguments continues from
``latest.pt`` and ends with the same weights as an uninterrupted run; when
``final.pt`` exists it returns at once. A run that stops before its last step
(``max_wall_seconds``, SIGTERM or SIGUSR1) saves ``latest.pt`` and reports
``exit_code == EXIT_RESUMABLE`` so that a scheduler resubmits it.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Mapping, Sequence

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from mass_core.config_section import from_section
from mass_core.pretrain.checkpoint import TrainingState, load_checkpoint, load_state_dict_checked, save_checkpoint, save_encoder
from mass_core.pretrain.data import make_loader
from mass_core.pretrain.distributed import DistEnv, any_rank, mean_over_ranks, setup_distributed, teardown_distributed
from mass_core.pretrain.ema import build_ema
from mass_core.pretrain.metrics import METRICS_FILE, VALIDATION_FILE, MetricsLogger
from mass_core.pretrain.task import PretextTask

__all__ = ["ENCODER_FILE", "EXIT_RESUMABLE", "FINAL_FILE", "LATEST_FILE", "TrainConfig", "TrainResult", "rank_batch", "snapshot_path", "train"]

LATEST_FILE = "latest.pt"
SNAPSHOT_DIR = "snapshots"
FINAL_FILE = "final.pt"
ENCODER_FILE = "encoder.pt"
# sysexits.h EX_TEMPFAIL, "try again later": the run saved latest.pt and wants resubmitting.
EXIT_RESUMABLE = 75


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping of a pretraining run (config key ``pretrain.train``).

    Args:
        steps: optimiser steps in total (the paper: 100k).
        batch_size: samples per optimiser step over all processes (the global batch; the paper:
            4 tasks of 13 masks). Each of N processes draws ``batch_size / N`` of them, so a
            run gives the same weights whatever the number of processes (up to float rounding;
            MASS divides its loss by the global batch's mask counts); N must divide it.
        lr: peak learning rate of the one-cycle schedule (the paper: 2e-3).
        warmup_fraction: share of the steps spent warming up (the paper: 0.05).
        optimizer: ``"lamb"`` (the paper's) or ``"adamw"``.
        weight_decay: on tensors with two or more dimensions (not biases or norm scales).
        grad_clip: max global gradient norm; ``None`` clips nothing (the norm is still logged).
        ema_decay: decay of the EMA weights used for evaluation (the paper: 0.99);
            ``None`` keeps no EMA and evaluates (and saves) the online weights.
        checkpoint_every: steps between ``latest.pt`` writes.
        log_every: steps between ``metrics.csv`` rows.
        snapshot_steps: steps after which a copy of the training checkpoint is
            kept as ``snapshots/step_<n>.pt`` (a learning curve's budgets); the
            learning-rate schedule is still that of the whole run.
        validate_every: steps between held-out checks of the EMA weights
            (:meth:`~mass_core.pretrain.task.PretextTask.validate`, rows in
            ``validation.csv``, also before the first step); 0 turns them off.
        seed: seeds model initialisation and every sample.
        num_workers: data-loader worker processes (0: load in the main process).
        max_wall_seconds: stop cleanly, leaving ``latest.pt``, before this many
            seconds have passed since the start; ``None`` for no limit.
        device: ``"auto"``, ``"cuda"`` or ``"cpu"``.
        bf16: bf16 autocast on CUDA (ignored on CPU, where it is slow).
    """

    steps: int = 300
    batch_size: int = 2
    lr: float = 2e-3
    warmup_fraction: float = 0.05
    optimizer: str = "lamb"
    weight_decay: float = 0.01
    grad_clip: float | None = 1.0
    ema_decay: float | None = 0.99
    checkpoint_every: int = 50
    log_every: int = 10
    validate_every: int = 0
    snapshot_steps: tuple[int, ...] = ()
    seed: int = 0
    num_workers: int = 0
    max_wall_seconds: float | None = None
    device: str = "auto"
    bf16: bool = True

    # Changing these mid-run would change the result; the rest may change between attempts.
    RUN_DEFINING = ("steps", "batch_size", "lr", "warmup_fraction", "optimizer", "weight_decay", "grad_clip", "ema_decay", "seed")

    def __post_init__(self) -> None:
        positive = {"steps": 1, "batch_size": 1, "checkpoint_every": 1, "log_every": 1}
        for name, least in positive.items():
            if getattr(self, name) < least:
                raise ValueError(f"{name} must be >= {least}, got {getattr(self, name)}")
        if self.lr <= 0 or (self.grad_clip is not None and self.grad_clip <= 0) or min(self.weight_decay, self.num_workers, self.seed, self.validate_every) < 0:
            raise ValueError(f"lr and grad_clip must be > 0, weight_decay, num_workers, seed and validate_every >= 0; got {self}")
        object.__setattr__(self, "snapshot_steps", tuple(sorted({int(n) for n in self.snapshot_steps})))
        if any(not 0 < n < self.steps for n in self.snapshot_steps):
            raise ValueError(f"snapshot_steps must lie in 1..steps-1 ({self.steps - 1}), got {list(self.snapshot_steps)}")
        if self.max_wall_seconds is not None and self.max_wall_seconds <= 0:
            raise ValueError(f"max_wall_seconds must be > 0 or None, got {self.max_wall_seconds}")
        # The one-cycle schedule needs a warm-up and a decay (build_scheduler).
        if not 0 < self.warmup_fraction < 0.5:
            raise ValueError(f"warmup_fraction must be in (0, 0.5), got {self.warmup_fraction}")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) or None, got {self.ema_decay}")
        if self.optimizer not in ("lamb", "adamw"):
            raise ValueError(f"optimizer must be 'lamb' or 'adamw', got {self.optimizer!r}")

    def changed(self, stored: Mapping[str, Any]) -> list[str]:
        """``"name: old -> new"`` for each :attr:`RUN_DEFINING` setting that differs from ``stored`` (a checkpoint's ``train_config``)."""
        return [f"{k}: {stored.get(k)!r} -> {getattr(self, k)!r}" for k in self.RUN_DEFINING if stored.get(k) != getattr(self, k)]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from the config's ``pretrain.train`` section; unknown keys raise ``ValueError``.

        Pretraining's one-cycle schedule needs 4 steps or more (:func:`build_scheduler`);
        finetuning, which brings its own schedule, builds the class directly.
        """
        config = from_section(cls, values, "pretrain.train")
        if config.steps < 4:
            raise ValueError(f"pretrain.train.steps must be >= 4 for the one-cycle schedule, got {config.steps}")
        return config


@dataclass(frozen=True)
class TrainResult:
    """How a call to :func:`train` ended.

    Attributes:
        finished: ``final.pt`` exists (now or from an earlier call).
        step: optimiser steps completed.
        out_dir: the run folder.
    """

    finished: bool
    step: int
    out_dir: Path

    @property
    def checkpoint(self) -> Path:
        """``final.pt`` when finished, else ``latest.pt``."""
        return self.out_dir / (FINAL_FILE if self.finished else LATEST_FILE)

    @property
    def exit_code(self) -> int:
        """0 only when finished; :data:`EXIT_RESUMABLE` when the run must be resubmitted."""
        return 0 if self.finished else EXIT_RESUMABLE


class _StopRequests:
    """Turns SIGTERM (a scheduler's time limit or pre-emption) and SIGUSR1 (an early warning) into a flag."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def __enter__(self) -> _StopRequests:
        # Handlers can only be installed from the main thread (not, e.g., from a notebook worker thread).
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


@dataclass
class _Window:
    """Running means of the logged values between two ``metrics.csv`` rows, plus throughput."""

    global_batch: int
    steps: int = 0
    data_seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)
    sums: dict[str, float] = field(default_factory=dict)

    def add(self, values: Mapping[str, float]) -> None:
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.steps += 1

    def flush(self, now: float) -> dict[str, float]:
        """Means since the last flush, ``samples_per_s`` and ``data_fraction`` (time spent waiting for data); then reset."""
        elapsed = max(now - self.started, 1e-9)
        row = {k: v / self.steps for k, v in self.sums.items()}
        row |= {"samples_per_s": self.steps * self.global_batch / elapsed, "data_fraction": self.data_seconds / elapsed}
        self.steps, self.data_seconds, self.started, self.sums = 0, 0.0, now, {}
        return row


@dataclass
class _Parts:
    """The objects of one run that checkpoints capture."""

    model: torch.nn.Module
    ema: torch.optim.swa_utils.AveragedModel | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    standardization: list[dict[str, Any]]

    @property
    def evaluated(self) -> torch.nn.Module:
        """The weights to validate and save for evaluation: the EMA copy, or the online model without one."""
        return self.model if self.ema is None else self.ema.module

    def state(self, task: PretextTask, config: TrainConfig, step: int, metrics: list[dict[str, float]],
              validation: list[dict[str, float]]) -> TrainingState:
        return TrainingState(
            method=task.method,
            model_config=task.model_config(),
            train_config=asdict(config),
            step=step,
            model=self.model.state_dict(),
            ema=self.evaluated.state_dict(),
            ema_updates=0 if self.ema is None else int(self.ema.n_averaged.item()),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            metrics=metrics,
            validation=validation,
            task=task.state_dict(),
            standardization=self.standardization,
            # A list: it reads back equal from a weights-only checkpoint.
            crop_size=list(task.crop_size() or ()),
        )

    def restore(self, path: Path, task: PretextTask, config: TrainConfig) -> TrainingState:
        state = load_checkpoint(path, task.method, task.model_config())
        changed = config.changed(state.train_config)
        if changed:
            raise ValueError(f"{path} was written with other training settings ({', '.join(changed)}); restore them or start in a new folder")
        load_state_dict_checked(self.model, state.model, str(path))
        if self.ema is not None:
            load_state_dict_checked(self.ema.module, state.ema, f"{path} (ema)")
            self.ema.n_averaged.fill_(state.ema_updates)
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        task.load_state_dict(state.task)
        return state


@dataclass
class _Logs:
    """``metrics.csv`` and ``validation.csv`` of the main process (``None`` elsewhere)."""

    metrics: MetricsLogger | None
    validation: MetricsLogger | None
    out_dir: Path | None = None

    @classmethod
    def open(cls, out_dir: Path, restored: TrainingState | None, is_main: bool) -> _Logs:
        if not is_main:
            return cls(None, None)
        validation = restored.validation if restored else ()
        return cls(MetricsLogger(out_dir, restored.metrics if restored else ()),
                   MetricsLogger(out_dir, validation, VALIDATION_FILE) if validation else None, out_dir)

    def histories(self) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
        return (self.metrics.rows if self.metrics else [], self.validation.rows if self.validation else [])

    def validate(self, task: PretextTask, parts: _Parts, env: DistEnv, step: int, started: float) -> None:
        """Log the task's held-out scores of the EMA weights (main process only; tasks without a check write no file)."""
        if self.out_dir is None:
            return
        scores = task.validate(parts.evaluated, env.device, step)
        if not scores:
            return
        if self.validation is None:
            self.validation = MetricsLogger(self.out_dir, (), VALIDATION_FILE)
        self.validation.log(step, scores | {"wall_s": time.monotonic() - started})

    def close(self) -> None:
        for logger in (self.metrics, self.validation):
            if logger is not None:
                logger.close()


def _build(task: PretextTask, config: TrainConfig, device: torch.device, standardization: list[dict[str, Any]]) -> _Parts:
    # The same seed on every rank gives every replica the same initial weights.
    torch.manual_seed(config.seed)
    model = task.build_model().to(device)
    if not isinstance(getattr(model, "encoder", None), torch.nn.Module):
        raise ValueError(f"task {task.method!r} builds a model without an 'encoder' attribute")
    optimizer, scheduler = task.configure_optimization(model, config)
    ema = None if config.ema_decay is None else build_ema(model, config.ema_decay)
    return _Parts(model=model, ema=ema, optimizer=optimizer, scheduler=scheduler, standardization=standardization)


def _finish(parts: _Parts, task: PretextTask, config: TrainConfig, out_dir: Path, logs: _Logs) -> None:
    # encoder.pt first: final.pt's existence is what marks the run complete.
    save_encoder(out_dir / ENCODER_FILE, parts.evaluated.encoder, task.method, config.steps)
    save_checkpoint(out_dir / FINAL_FILE, parts.state(task, config, config.steps, *logs.histories()))
    (out_dir / LATEST_FILE).unlink(missing_ok=True)


def train(task: PretextTask, config: TrainConfig, out_dir: str | Path, standardization: Sequence[Mapping[str, Any]] = ()) -> TrainResult:
    """Train ``task`` into ``out_dir``, resuming from ``latest.pt`` when present.

    Args:
        task: the pretext task (model, samples, loss).
        config: optimisation and bookkeeping settings.
        out_dir: the run folder (created if needed).
        standardization: how the training cases were standardized
            (:func:`~mass_core.trained_standardization.training_standardization`),
            written into every checkpoint for inference.

    Returns:
        :class:`TrainResult`; ``exit_code`` is 0 only when ``final.pt`` exists.

    Raises:
        ValueError: ``out_dir`` holds a checkpoint of another method, model
            shape or training settings.
        FloatingPointError: the loss became NaN or infinite.
    """
    started = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / FINAL_FILE).exists():
        state = load_checkpoint(out_dir / FINAL_FILE, task.method, task.model_config())
        if not (out_dir / METRICS_FILE).exists():
            MetricsLogger(out_dir, state.metrics).close()
        if state.validation and not (out_dir / VALIDATION_FILE).exists():
            MetricsLogger(out_dir, state.validation, VALIDATION_FILE).close()
        return TrainResult(finished=True, step=state.step, out_dir=out_dir)
    env = setup_distributed(config.device)
    try:
        return _run(task, config, out_dir, env, started, [dict(r) for r in standardization])
    finally:
        teardown_distributed(env)


def rank_batch(batch_size: int, world_size: int) -> int:
    """Samples per step on each of ``world_size`` processes: an equal share of the global ``batch_size``.

    Raises:
        ValueError: ``world_size`` does not divide ``batch_size``.
    """
    if batch_size % world_size:
        raise ValueError(f"pretrain.train.batch_size ({batch_size}) is the global batch and must be a multiple of the number of processes ({world_size})")
    return batch_size // world_size


def _run(task: PretextTask, config: TrainConfig, out_dir: Path, env: DistEnv, started: float,
         standardization: list[dict[str, Any]]) -> TrainResult:
    per_rank = rank_batch(config.batch_size, env.world_size)
    parts = _build(task, config, env.device, standardization)
    latest = out_dir / LATEST_FILE
    restored = parts.restore(latest, task, config) if latest.exists() else None
    start = restored.step if restored else 0
    network: torch.nn.Module = parts.model
    if env.world_size > 1:
        network = DistributedDataParallel(parts.model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    use_bf16 = config.bf16 and env.device.type == "cuda"
    loader = make_loader(task, config.seed, start, config.steps, per_rank, config.num_workers, env.rank, env.world_size,
                         pin_memory=env.device.type == "cuda")
    logs = _Logs.open(out_dir, restored, env.is_main)
    tty = sys.stderr.isatty()
    progress = tqdm(total=config.steps, initial=start, disable=not env.is_main, mininterval=1 if tty else 60, desc=f"train {task.method}", file=sys.stderr)

    step, saved_at = start, start
    step_seconds = save_seconds = 0.0
    window = _Window(global_batch=config.batch_size)
    if start == 0 and config.validate_every:
        logs.validate(task, parts, env, 0, started)
    with _StopRequests() as stop, progress:
        tick = time.monotonic()
        for raw in loader:
            window.data_seconds += time.monotonic() - tick
            network.train()
            batch = task.make_batch(raw, env.device)
            with torch.autocast(device_type=env.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                losses = task.compute_loss(network, batch)
            parts.optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            # An infinite bound scales the gradients by exactly 1: no clipping, same weights.
            grad_norm = torch.nn.utils.clip_grad_norm_(parts.model.parameters(), math.inf if config.grad_clip is None else config.grad_clip)
            lr = parts.optimizer.param_groups[0]["lr"]
            parts.optimizer.step()
            parts.scheduler.step()
            if parts.ema is not None:
                parts.ema.update_parameters(parts.model)
            step += 1

            values = {k: float(v.detach()) for k, v in losses.items()}
            if not math.isfinite(values["loss"]):
                raise FloatingPointError(f"loss is {values['loss']} at step {step}; {latest.name} holds the last finite weights")
            window.add({**values, "grad_norm": float(grad_norm)})
            now = time.monotonic()
            step_seconds = now - tick if step_seconds == 0 else 0.9 * step_seconds + 0.1 * (now - tick)
            if step % config.log_every == 0 or step == config.steps:
                row = mean_over_ranks(window.flush(now), env) | {"lr": lr, "wall_s": now - started}
                if logs.metrics is not None:
                    logs.metrics.log(step, row)
                progress.set_postfix(loss=f"{row['loss']:.4f}", samples_s=f"{row['samples_per_s']:.2f}", refresh=False)
            progress.update(1)
            if config.validate_every and (step % config.validate_every == 0 or step == config.steps):
                logs.validate(task, parts, env, step, started)
            if step == config.steps:
                break

            if step in config.snapshot_steps and env.is_main:
                save_checkpoint(snapshot_path(out_dir, step), parts.state(task, config, step, *logs.histories()))
            if step % config.checkpoint_every == 0:
                save_seconds = _save_latest(parts, task, config, out_dir, step, env, logs)
                saved_at = step
            # Stop while a step and a checkpoint (twice, for safety) still fit in the budget.
            over_budget = config.max_wall_seconds is not None and time.monotonic() - started + 2 * (step_seconds + save_seconds) > config.max_wall_seconds
            if any_rank(stop.requested or over_budget, env):
                if saved_at != step:
                    _save_latest(parts, task, config, out_dir, step, env, logs)
                break
            tick = time.monotonic()

    logs.close()
    finished = step == config.steps
    if finished and env.is_main:
        _finish(parts, task, config, out_dir, logs)
    return TrainResult(finished=finished, step=step, out_dir=out_dir)


def snapshot_path(out_dir: str | Path, step: int) -> Path:
    """Where the snapshot after ``step`` steps lives (``snapshots/step_<n>.pt``)."""
    return Path(out_dir) / SNAPSHOT_DIR / f"step_{int(step)}.pt"


def _save_latest(parts: _Parts, task: PretextTask, config: TrainConfig, out_dir: Path, step: int, env: DistEnv, logs: _Logs) -> float:
    """Write ``latest.pt`` on rank 0; returns the seconds it took (for the wall-clock budget)."""
    began = time.monotonic()
    if env.is_main:
        save_checkpoint(out_dir / LATEST_FILE, parts.state(task, config, step, *logs.histories()))
    return time.monotonic() - began
