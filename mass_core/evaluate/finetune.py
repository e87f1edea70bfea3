"""Segmentation finetuning on a label budget (the ``finetune_seg`` job).

One run = one (dataset, method, label budget, seed):

1. the training subset is :meth:`~mass_core.evaluate.subsets.Budget.subset`
   of the train split (nested over budgets, shared by methods and seeds);
2. :func:`~mass_core.evaluate.segmentation.build_segmentation_model` starts the
   shared encoder from the method's ``encoder.pt`` (``scratch``: a random one);
3. supervised training on random crops of the subset, most of them centred
   on a random foreground voxel of a random class (nnU-Net's oversampling, so
   that small structures such as lesions are seen at all), with MONAI's
   Dice (over the foreground classes, as in nnU-Net) plus cross-entropy,
   both blind to ignored voxels (:class:`MaskedDiceCELoss`), AdamW, and
   a polynomial learning-rate decay after an optional linear warm-up;
4. model selection on the val split only (mean Dice every ``val_every`` steps
   and at the end; the best weights are kept); the test split is used once;
5. evaluation on the test split with MONAI's sliding-window inference in the
   standardized space: Dice and HD95 (mm) per class and case, ignored voxels
   (the dataset's ``ignore_label``) left out.

Training runs on the shared trainer (:func:`~mass_core.pretrain.trainer.train`)
in ``out_dir/training``: ``latest.pt`` every ``checkpoint_every`` steps (with
the crop sampler's random stream and the best-on-val weights so far), so a job
stopped by its time limit (SIGTERM) raises :class:`FinetuneStopped` and its
rerun continues to the same final weights as an uninterrupted run.

Outputs in ``out_dir``: ``metrics.parquet`` (one row per test case and class),
``summary.json`` (subset, selection, mean scores, timings) and
``predictions.npz`` (the test label maps, for figures).
"""

from __future__ import annotations

import copy
import io
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from monai.losses import MaskedDiceLoss

from mass_core.config_section import from_section
from mass_core.evaluate.cases import EvalCase, dataset_classes, load_split
from mass_core.evaluate.metrics import label_map_metrics
from mass_core.evaluate.segmentation import ClassPriorNet, SegmentationNet, build_class_prior_model, build_segmentation_model
from mass_core.evaluate.subsets import Budget
from mass_core.evaluate.job import start_job
from mass_core.evaluate.windows import centred_box, check_window, extract_crop, sliding_window_logits
from mass_core.labels import IGNORE_LABEL
from mass_core.models.encoder import EncoderConfig
from mass_core.pretrain.checkpoint import load_checkpoint
from mass_core.pretrain.task import PretextTask
from mass_core.pretrain.trainer import EXIT_RESUMABLE, FINAL_FILE, LATEST_FILE, TrainConfig
from mass_core.pretrain.trainer import train as run_training
from mass_core.provenance import config_sha256, file_md5
from mass_core.trained_standardization import training_standardization

__all__ = ["FINETUNE_FILES", "IGNORE_INDEX", "TRAINING_DIR", "FinetuneParams", "FinetuneStopped", "MaskedDiceCELoss", "learning_rate_factor", "predict_label_map",
           "run_finetune", "target_lookup"]

FINETUNE_FILES = {"metrics": "metrics.parquet", "summary": "summary.json", "predictions": "predictions.npz"}
# The trainer's run folder inside out_dir (checkpoints, metrics.csv, validation.csv).
TRAINING_DIR = "training"
# Foreground voxels remembered per case and class for oversampling (nnU-Net keeps 10k).
_MAX_FOREGROUND_SAMPLES = 10_000
# Training target of an ignored voxel (no output channel has this index).
IGNORE_INDEX = -1


@dataclass(frozen=True)
class FinetuneParams:
    """Settings of a finetuning run (config key ``evaluation.finetune``).

    Args:
        steps: optimiser steps.
        crop: training crop ``(X, Y, Z)`` in voxels, multiples of the encoder's downsampling factor.
        batch: crops per step.
        lr: peak learning rate of AdamW (decays as ``(1 - step / steps) ** 0.9``).
        weight_decay: AdamW weight decay.
        warmup_steps: steps over which the learning rate rises linearly from
            ``lr / warmup_steps`` to ``lr`` before the decay, so that the
            randomly initialised decoder's first, large gradients do not
            overwrite a pretrained encoder (the warm-up of nnU-Net's and
            nnssl's pretrained finetuning); 0 starts at ``lr``.
        foreground_crops: share of crops centred on a foreground voxel (of a
            class drawn uniformly among those in the case). nnU-Net uses 1/3 over
            long schedules; short ones need more: on the phantom, 150 steps reach
            test Dice 0.26 with 0.8 and 0.15 with 0.5.
        val_every: validate every this many steps (and always after the last).
        roi: sliding-window size ``(X, Y, Z)`` for validation and test inference;
            keep it equal to ``crop``: InstanceNorm statistics depend on the field
            of view, and a model trained on 32^3 crops segments a padded 96^3
            window badly (val Dice 0.03 instead of 0.18 on the phantom).
        overlap: sliding-window overlap (nnU-Net and the paper use 0.5; 0.25
            costs half as many windows, with Gaussian blending).
        sw_batch: windows per forward pass at inference; at least 2 on CPU, where PyTorch runs
            a batch of one through its slow reference 3D convolution instead of oneDNN (5-8x slower).
        device: ``auto``, ``cuda`` or ``cpu``.
        ema_decay: evaluate (select and test) an exponential moving average of
            the weights with this decay; ``None`` (default) uses the trained weights.
        checkpoint_every: steps between ``latest.pt`` writes (what a resumed job repeats at most).
    """

    steps: int = 150
    crop: tuple[int, int, int] = (32, 32, 32)
    batch: int = 2
    lr: float = 1e-2
    weight_decay: float = 1e-5
    warmup_steps: int = 0
    foreground_crops: float = 0.8
    val_every: int = 75
    roi: tuple[int, int, int] = (32, 32, 32)
    overlap: float = 0.25
    sw_batch: int = 2
    device: str = "auto"
    ema_decay: float | None = None
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "val_every", "sw_batch", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= int(self.warmup_steps) < int(self.steps):
            raise ValueError(f"warmup_steps must be in [0, steps), got {self.warmup_steps} with {self.steps} steps")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        if not 0 <= self.foreground_crops <= 1:
            raise ValueError(f"foreground_crops must be in [0, 1], got {self.foreground_crops}")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) or None, got {self.ema_decay}")
        object.__setattr__(self, "crop", tuple(int(c) for c in self.crop))
        object.__setattr__(self, "roi", tuple(int(c) for c in self.roi))

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> FinetuneParams:
        """Build from the config's ``evaluation.finetune`` section; unknown keys raise ``ValueError``."""
        return from_section(cls, section, "evaluation.finetune")


class _CropSampler:
    """Random training crops of the subset, a share centred on foreground voxels."""

    def __init__(self, cases: Sequence[EvalCase], lookup: np.ndarray, params: FinetuneParams, rng: np.random.Generator) -> None:
        self.cases = cases
        self.lookup = lookup
        self.params = params
        self.rng = rng
        self.pad = [float(np.min(c.image)) for c in cases]
        self.foreground: list[dict[int, np.ndarray]] = []
        for case in cases:
            label = np.asarray(case.label)
            per_class = {}
            for class_id in case.label_classes:
                coords = np.argwhere(label == class_id)
                if len(coords) > _MAX_FOREGROUND_SAMPLES:
                    coords = coords[rng.choice(len(coords), _MAX_FOREGROUND_SAMPLES, replace=False)]
                per_class[class_id] = coords
            self.foreground.append(per_class)

    def draw(self) -> dict[str, np.ndarray]:
        """The next crop of the stream: ``image`` ``(1, X, Y, Z)`` and its training targets ``label``."""
        crop = self.params.crop
        i = int(self.rng.integers(len(self.cases)))
        case, shape = self.cases[i], self.cases[i].image.shape
        if self.foreground[i] and self.rng.random() < self.params.foreground_crops:
            classes = sorted(self.foreground[i])
            coords = self.foreground[i][classes[int(self.rng.integers(len(classes)))]]
            start = centred_box(shape, crop, coords[int(self.rng.integers(len(coords)))])
        else:
            start = tuple(int(self.rng.integers(max(n - s, 0) + 1)) for n, s in zip(shape, crop))
        image = extract_crop(case.image, start, crop, self.pad[i])
        return {"image": image[None], "label": self.lookup[extract_crop(case.label, start, crop, 0)][None]}


class _FinetuneTask(PretextTask):
    """Supervised segmentation of the label subset as a task of the shared trainer.

    Unlike the pretext tasks, :meth:`sample` draws the next crop of one
    seeded stream (the order finetuning always drew them in) rather than a
    pure function of ``(seed, step, index)``; the trainer must load in the
    main process (``num_workers=0``), and the stream's state travels in the
    checkpoints with the losses since the last validation and the best-on-val
    weights (:meth:`state_dict`).
    """

    method = "finetune"

    def __init__(self, initial: torch.nn.Module, sampler: _CropSampler, val: Sequence[EvalCase], classes: Sequence[int],
                 params: FinetuneParams, fingerprint: str) -> None:
        self.initial = initial
        self.sampler = sampler
        self.val = val
        self.classes = classes
        self.params = params
        self.fingerprint = fingerprint
        # Dice over the foreground classes only, as nnU-Net does: with the
        # background's near-perfect Dice in the mean, small organs pull less. On the
        # phantom at 10 % labels this raised the mean val Dice of every method
        # (by 0.7-2.5 points over three seeds).
        self.loss_fn = MaskedDiceCELoss()
        self.losses: list[float] = []
        self.history: list[dict[str, float]] = []
        self.best: dict[str, Any] | None = None

    def model_config(self) -> dict[str, Any]:
        # The fingerprint covers data, subset, start weights and settings: a checkpoint of another run never resumes.
        return {"encoder": self.initial.encoder.config.to_dict(), "run": self.fingerprint}

    def build_model(self) -> torch.nn.Module:
        return copy.deepcopy(self.initial)

    def sample(self, seed: int, step: int, index: int) -> dict[str, np.ndarray]:
        return self.sampler.draw()

    def make_batch(self, batch: dict[str, torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return batch["image"].to(device, memory_format=torch.channels_last_3d), batch["label"].to(device)

    def compute_loss(self, model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, labels = batch
        loss = self.loss_fn(model(images), labels)
        self.losses.append(loss.item())
        return {"loss": loss}

    def configure_optimization(self, model: torch.nn.Module, config: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.params.lr, weight_decay=self.params.weight_decay)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(step, self.params))

    def validate(self, model: torch.nn.Module, device: torch.device, step: int) -> dict[str, float]:
        """Mean val Dice; keeps the best weights (ties keep the later: more training at equal score)."""
        # The untrained decoder is no candidate: selection is among trained weights.
        if step == 0:
            return {}
        val_dice = _mean_dice(_evaluate(model, self.val, self.classes, self.params, device, hd95=False)[0])
        loss = float(np.mean(self.losses))
        self.history.append({"step": step, "loss": loss, "val_dice": val_dice})
        print(f"step {step}/{self.params.steps} loss {loss:.4f} val Dice {val_dice:.4f}", file=sys.stderr)
        self.losses = []
        if self.best is None or not val_dice < self.best["val_dice"]:
            self.best = {"val_dice": val_dice, "step": step, "weights": copy.deepcopy(model.state_dict())}
        return {"loss": loss, "val_dice": val_dice}

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.sampler.rng.bit_generator.state, "losses": list(self.losses), "history": list(self.history), "best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.rng.bit_generator.state = state["rng"]
        self.losses, self.history, self.best = list(state["losses"]), list(state["history"]), state["best"]


class FinetuneStopped(RuntimeError):
    """Finetuning stopped before its last step (time limit, SIGTERM) and left ``latest.pt``; rerunning continues it.

    Attributes:
        exit_code: :data:`~mass_core.pretrain.trainer.EXIT_RESUMABLE`, for a scheduler to resubmit the job.
    """

    exit_code = EXIT_RESUMABLE


def target_lookup(classes: Sequence[int]) -> np.ndarray:
    """Standardized label value -> training target: class ``classes[i]`` is ``i + 1``, ignored voxels :data:`IGNORE_INDEX`, the rest 0."""
    lookup = np.zeros(IGNORE_LABEL + 1, dtype=np.int64)
    lookup[list(classes)] = np.arange(1, len(classes) + 1)
    lookup[IGNORE_LABEL] = IGNORE_INDEX
    return lookup


class MaskedDiceCELoss(torch.nn.Module):
    """MONAI's DiceCE loss (foreground-class Dice over the batch + cross-entropy) with ignored voxels left out.

    MONAI's ``DiceCELoss`` has no ignore index, so both terms are masked here:
    :class:`monai.losses.MaskedDiceLoss` zeroes prediction and target on
    ignored voxels, and the cross-entropy is averaged over the other voxels
    only. With no ignored voxel it equals
    ``DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)``.

    ``forward(logits, target)``: ``(B, C, X, Y, Z)`` logits and ``(B, 1, X, Y, Z)``
    int64 targets in ``0..C-1`` or :data:`IGNORE_INDEX`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dice = MaskedDiceLoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != IGNORE_INDEX
        dice = self.dice(logits, torch.where(valid, target, 0), mask=valid.to(logits.dtype))
        ce = F.cross_entropy(logits, target[:, 0], ignore_index=IGNORE_INDEX, reduction="sum")
        # A crop may lie wholly in ignored voxels: its cross-entropy is 0, not the NaN of a mean over nothing.
        return dice + ce / valid.sum().clamp_min(1)


def learning_rate_factor(step: int, params: FinetuneParams) -> float:
    """Multiplier of ``params.lr`` at optimiser step ``step`` (0-based): linear warm-up, then ``(1 - step / steps) ** 0.9``."""
    warmup = min(1.0, (step + 1) / params.warmup_steps) if params.warmup_steps else 1.0
    return warmup * (1 - step / params.steps) ** 0.9


def predict_label_map(model: torch.nn.Module, image: np.ndarray, classes: Sequence[int], params: FinetuneParams,
                      device: torch.device) -> np.ndarray:
    """Class ids ``(X, Y, Z)`` (0 = background) predicted over a whole standardized volume."""
    logits = sliding_window_logits(image, model, params.roi, params.overlap, params.sw_batch, device)
    ids = np.asarray([0, *classes])
    dtype = np.uint8 if ids.max() <= np.iinfo(np.uint8).max else np.uint16
    return ids[logits.argmax(dim=0).numpy()].astype(dtype)


def _evaluate(model: torch.nn.Module, cases: Sequence[EvalCase], classes: Sequence[int], params: FinetuneParams,
              device: torch.device, hd95: bool) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    model.eval()
    frames, predictions = [], {}
    for case in cases:
        predicted = predict_label_map(model, np.asarray(case.image), classes, params, device)
        predictions[case.case_id] = predicted
        frame = label_map_metrics(predicted, np.asarray(case.label), classes, case.spacing_mm, hd95=hd95)
        frames.append(frame.assign(case_id=case.case_id))
    model.train()
    return pd.concat(frames, ignore_index=True), predictions


def _mean_dice(metrics: pd.DataFrame) -> float:
    """Dice averaged over cases containing each class, then over classes (the paper's protocol)."""
    return float(metrics.groupby("class_id")["dice"].mean().mean())


def run_finetune(
    manifest_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    dataset: str,
    method: str,
    budget: Budget,
    seed: int,
    subset_seed: int,
    encoder_weights: str | os.PathLike | None,
    encoder_config: EncoderConfig | None,
    params: FinetuneParams,
    threads: int | None = None,
    whole_model: bool = False,
) -> dict[str, Any]:
    """Finetune, select on val, evaluate on test; write :data:`FINETUNE_FILES` into ``out_dir``.

    Args:
        manifest_path: the dataset's ``manifest.parquet`` (labeled train, val and test cases).
        out_dir: output folder.
        dataset, method: names written into every output row.
        budget: the labeled share or number of train cases; outputs carry its
            token (``budget``), the number of cases used (``label_cases``) and
            their share of the train split (``fraction``).
        seed: training seed (initialisation, crop sampling).
        subset_seed: seed of the label-budget permutation (the same for every
            method and training seed, so that they see the same cases).
        encoder_weights: the method's ``encoder.pt``; ``None`` initialises the encoder from ``seed``.
        encoder_config: encoder shape (checked against ``encoder_weights``).
        params: training and inference settings.
        threads: torch CPU threads (the Snakemake job's ``threads``); ``None`` leaves torch's default.
        whole_model: MASS-FT: ``encoder_weights`` is a MASS ``final.pt`` and the
            whole in-context model is finetuned with class priors
            (:func:`~mass_core.evaluate.segmentation.build_class_prior_model`).

    Returns:
        the summary written to ``summary.json``.
    """
    job = start_job(out_dir, FINETUNE_FILES, "summary", threads, params.device)
    device = job.device
    classes = dataset_classes(manifest_path)
    train_all = load_split(manifest_path, "train", require_labels=True)
    try:
        chosen = budget.subset([c.case_id for c in train_all], subset_seed)
    except ValueError as error:  # an empty train split, or a case-count budget larger than it
        raise ValueError(f"{manifest_path}: {error}") from None
    share = len(chosen) / len(train_all)
    train = [c for c in train_all if c.case_id in set(chosen)]
    val = load_split(manifest_path, "val", require_labels=True)
    test = load_split(manifest_path, "test", require_labels=True)
    if not test:
        raise ValueError(f"{manifest_path}: the test split is empty; nothing to evaluate")

    # Channels-last 3D tensors let oneDNN pick faster convolution kernels: a
    # finetuning run of the default network on CPU takes about 11 % less time.
    if whole_model:
        if encoder_weights is None:
            raise ValueError("MASS-FT (whole_model) needs the MASS training checkpoint as encoder_weights")
        model: SegmentationNet | ClassPriorNet = build_class_prior_model(
            encoder_weights, {c.case_id: (c.image, c.label) for c in train}, classes, params.crop, device, source=manifest_path)
    else:
        model = build_segmentation_model(len(classes) + 1, encoder_config, encoder_weights, seed)
    model = model.to(device)
    for module in model.modules():
        # Convolutions only: MASS-FT's class priors are 4-D tensors, which have no channels-last-3d layout.
        if isinstance(module, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)):
            module.to(memory_format=torch.channels_last_3d)
    factor = model.encoder.config.downsampling_factor
    check_window(params.crop, factor, "crop")
    check_window(params.roi, factor, "roi")
    sampler = _CropSampler(train, target_lookup(classes), params, np.random.default_rng([seed, 1]))
    fingerprint = config_sha256({
        "manifest": file_md5(manifest_path), "start": None if encoder_weights is None else file_md5(encoder_weights),
        "train_cases": chosen, "whole_model": whole_model, "seed": int(seed),
        "params": {k: v for k, v in asdict(params).items() if k not in ("device", "checkpoint_every")},
    })
    task = _FinetuneTask(model, sampler, val, classes, params, fingerprint)
    config = TrainConfig(steps=params.steps, batch_size=params.batch, lr=params.lr, optimizer="adamw", weight_decay=params.weight_decay,
                         grad_clip=None, ema_decay=params.ema_decay, checkpoint_every=params.checkpoint_every, log_every=params.val_every,
                         validate_every=params.val_every if val else 0, seed=int(seed), device=params.device, bf16=False)
    run_dir = Path(out_dir) / TRAINING_DIR
    _drop_other_runs(run_dir, task)
    train_started = time.perf_counter()
    result = run_training(task, config, run_dir, training_standardization([manifest_path]))
    if not result.finished:
        raise FinetuneStopped(f"finetuning stopped after step {result.step} of {params.steps}; rerun to continue from {result.checkpoint}")
    train_seconds = time.perf_counter() - train_started
    final = load_checkpoint(result.checkpoint, task.method, task.model_config())
    task.load_state_dict(final.task)
    best = task.best
    model = task.build_model()
    model.load_state_dict(final.ema if best is None else best["weights"])
    history = task.history

    metrics, predictions = _evaluate(model, test, classes, params, device, hd95=True)
    metrics = metrics.assign(dataset=dataset, method=method, budget=budget.token, label_cases=len(chosen), fraction=share, seed=int(seed))
    metrics = metrics[["dataset", "method", "budget", "label_cases", "fraction", "seed", "case_id", "class_id", "dice", "hd95_mm", "truth_voxels", "pred_voxels"]]
    job.write_table("metrics", metrics)
    job.write("predictions", lambda tmp: _save_npz(tmp, predictions))
    summary = {
        "dataset": dataset,
        "method": method,
        "budget": budget.token,
        "label_cases": len(chosen),
        "fraction": share,
        "seed": int(seed),
        "subset_seed": int(subset_seed),
        "train_cases": chosen,
        "val_cases": [c.case_id for c in val],
        "test_cases": [c.case_id for c in test],
        "classes": classes,
        "encoder_weights": None if encoder_weights is None else str(encoder_weights),
        "network": "in-context model with class priors (MASS-FT)" if whole_model else "encoder + U-Net decoder",
        "encoder_config": model.encoder.config.to_dict(),
        "params": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(params).items()},
        "selection": "best val Dice" if best is not None else "last step (empty val split)",
        "selected_step": best["step"] if best is not None else params.steps,
        "history": history,
        "test_dice": _mean_dice(metrics),
        "test_hd95_mm": float(metrics.groupby("class_id")["hd95_mm"].mean().mean()),
        "train_seconds": round(train_seconds, 1),
    }
    summary = job.write_summary(summary)
    print(json.dumps({k: summary[k] for k in ("method", "budget", "seed", "test_dice", "total_seconds", "cpu_seconds")}), file=sys.stderr)
    return summary


def _drop_other_runs(run_dir: Path, task: _FinetuneTask) -> None:
    """Remove checkpoints of another run (other data, start weights or settings): a rerun after a change starts afresh."""
    for name in (LATEST_FILE, FINAL_FILE):
        path = run_dir / name
        if path.exists() and load_checkpoint(path).model_config != task.model_config():
            path.unlink()


def _save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    # np.savez appends ".npz" to names without it; write through a file object instead.
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    path.write_bytes(buffer.getvalue())
