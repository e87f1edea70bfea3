"""Pipeline entry of the pretrain stage: manifests + proposals -> a trained pretext model.

:data:`PRETEXT_TASKS` is the registry of pretext methods: every method name
maps to a :class:`PretextMethod`, its task factory and what the workflow plans
for it (proposals, in-context evaluation, reconstruction picture). The
baselines (MIM, MiM) add their entries here and share everything else; a task
defined outside the package is added by a module named in
``pretrain.method_modules`` (:func:`load_method_modules`).
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

import torch

from mass_core.evaluate.cases import load_split
from mass_core.manifest import read_manifest
from mass_core.models.encoder import EncoderConfig, ResidualEncoder
from mass_core.pretrain.checkpoint import save_encoder
from mass_core.pretrain.heldout import HeldOutCheck
from mass_core.pretrain.mass import MassConfig, MassTask, StoreCase
from mass_core.pretrain.mim import ImageCase, MimConfig, MimTask
from mass_core.pretrain.mim_hier import MimHierConfig, MimHierTask
from mass_core.pretrain.task import PretextTask
from mass_core.pretrain.trainer import ENCODER_FILE, TrainConfig, TrainResult, train
from mass_core.proposals.store import LABELS_FILE

__all__ = ["PRETEXT_TASKS", "SCRATCH", "PretextMethod", "check_method_names", "finetune_rows", "init_scratch", "load_method_modules", "register",
           "run_pretraining", "training_cases"]

PathLike = str | os.PathLike


def _heldout_checks(config: MassConfig, sources: Sequence[tuple[Path, Path]]) -> list[HeldOutCheck]:
    """One held-out check per dataset with val cases: its val proposals, and its labeled train/val cases where present."""
    checks = []
    for manifest, root in sources:
        val = load_split(manifest, "val", require_labels=False)
        if not val:
            continue
        rows = read_manifest(manifest, split="val")
        stores = [StoreCase(row.case_id, row.image, root / row.case_id) for row in rows.itertuples() if (root / row.case_id / LABELS_FILE).is_file()]
        labeled_val = [c for c in val if c.label is not None]
        references = [c for c in load_split(manifest, "train", require_labels=False) if c.label is not None] if labeled_val else []
        checks.append(HeldOutCheck(stores, config.sampler, references, labeled_val, config.heldout, config.sampler.crop_size))
    return checks


def _mass_task(cases: pd.DataFrame, cfg: Mapping[str, Any], sources: Sequence[tuple[Path, Path]]) -> PretextTask:
    # The propose stage skips a case without usable proposals (the reason is
    # in its summary.json and QC picture) and writes no store for it; say in
    # the log which cases MASS trains without, rather than failing on them.
    usable = [Path(row.proposals, LABELS_FILE).is_file() for row in cases.itertuples()]
    left_out = cases.loc[[not u for u in usable], "case_id"].tolist()
    if left_out:
        print(f"mass: {len(left_out)} training case(s) have no proposals and are left out: {', '.join(left_out)}", file=sys.stderr)
    if not any(usable):
        raise ValueError("no training case has proposals; see the propose stage's summary.json files")
    stores = [StoreCase(row.case_id, row.image, row.proposals) for row in cases[usable].itertuples()]
    config = MassConfig.from_config(cfg.get("encoder", {}), cfg.get("mass", {}))
    validate = TrainConfig.from_dict(cfg.get("train", {})).validate_every > 0
    return MassTask(stores, config, _heldout_checks(config, sources) if validate else [], weights=cases.loc[usable, "weight"].tolist())


def _images(cases: pd.DataFrame) -> list[ImageCase]:
    return [ImageCase(row.case_id, Path(row.image)) for row in cases.itertuples()]


def _mim_task(cases: pd.DataFrame, cfg: Mapping[str, Any], sources: Sequence[tuple[Path, Path]]) -> PretextTask:
    return MimTask(_images(cases), MimConfig.from_config(cfg.get("encoder", {}), cfg.get("mim", {})), cases["weight"].tolist())


def _mim_hier_task(cases: pd.DataFrame, cfg: Mapping[str, Any], sources: Sequence[tuple[Path, Path]]) -> PretextTask:
    return MimHierTask(_images(cases), MimHierConfig.from_config(cfg.get("encoder", {}), cfg.get("mim_hier", {})),
                       cases["weight"].tolist())


TaskFactory = Callable[[pd.DataFrame, Mapping[str, Any], Sequence[tuple[Path, Path]]], PretextTask]

# The baseline without pretraining. Not a registry entry: it has no task, no
# training run and no final.pt, only a seeded random encoder.pt
# (init_scratch), and it is the reference row of every comparison.
SCRATCH = "scratch"


@dataclass(frozen=True)
class PretextMethod:
    """What the pipeline knows about one pretext task; the workflow plans its jobs from these fields.

    Attributes:
        name: the name in ``pretrain.methods``, in ``results/pretrain/<name>``
            and in its checkpoints (the task's ``method``).
        build: factory(training cases, the config's ``pretrain`` section,
            (manifest, proposals root) per dataset) -> the task.
        section: the key under ``pretrain`` holding its settings (handed to its
            job with ``train`` and ``encoder``); None when it has none.
        needs_proposals: its job waits for every pretraining case's proposals.
        in_context: ``final.pt`` holds an in-context segmenter (what
            :func:`~mass_core.evaluate.fewshot.load_incontext_segmenter` loads),
            so the evaluation adds few-shot runs, the learning curve and the
            finetuning of the whole model (row ``<name>``; row
            ``<name>_encoder`` finetunes its encoder, as ``evaluation.mass_finetune`` says).
            Every other method is finetuned and probed from ``encoder.pt``.
        reconstruction_figure: ``final.pt`` holds a masked-image-modelling
            :class:`~mass_core.models.reconstruction.ReconstructionNet` and
            ``section`` a ``mask_ratio``: the workflow draws ``reconstruction.png``.
    """

    name: str
    build: TaskFactory
    section: str | None = None
    needs_proposals: bool = False
    in_context: bool = False
    reconstruction_figure: bool = False


PRETEXT_TASKS: dict[str, PretextMethod] = {
    method.name: method
    for method in (
        PretextMethod("mass", _mass_task, section="mass", needs_proposals=True, in_context=True),
        PretextMethod("mim", _mim_task, section="mim", reconstruction_figure=True),
        PretextMethod("mim_hier", _mim_hier_task, section="mim_hier", reconstruction_figure=True),
    )
}


def register(method: PretextMethod) -> None:
    """Add ``method`` to :data:`PRETEXT_TASKS`; registering the same entry again does nothing."""
    if PRETEXT_TASKS.get(method.name, method) is not method or method.name == SCRATCH:
        raise ValueError(f"pretext method {method.name!r} is already registered")
    PRETEXT_TASKS[method.name] = method


def load_method_modules(modules: Sequence[str]) -> None:
    """Import the modules named in ``pretrain.method_modules`` and register their ``PRETEXT_METHODS`` lists.

    Raises:
        ValueError: a module cannot be imported, has no ``PRETEXT_METHODS``, or
            reuses a registered name.
    """
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as err:
            raise ValueError(f"cannot import {name!r} ({err})") from err
        if not hasattr(module, "PRETEXT_METHODS"):
            raise ValueError(f"module {name!r} defines no PRETEXT_METHODS list")
        for method in module.PRETEXT_METHODS:
            register(method)


def finetune_rows(methods: Sequence[str], in_context_ways: Sequence[str]) -> dict[str, tuple[str, bool]]:
    """The finetuning rows of a study in table order: row -> (pretraining method, whether the whole model is finetuned).

    A method with an in-context model gives row ``<name>`` (MASS-FT: the whole
    in-context model from ``final.pt``) and/or ``<name>_encoder`` (its encoder,
    like every other method), as ``in_context_ways`` (``evaluation.mass_finetune``)
    lists ``whole`` / ``encoder``; every other method, :data:`SCRATCH` included,
    gives one encoder row under its own name.
    """
    rows: dict[str, tuple[str, bool]] = {}
    for method in methods:
        if method != SCRATCH and PRETEXT_TASKS[method].in_context:
            if "whole" in in_context_ways:
                rows[method] = (method, True)
            if "encoder" in in_context_ways:
                rows[f"{method}_encoder"] = (method, False)
        else:
            rows[method] = (method, False)
    return rows


def check_method_names(names: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the first of ``names`` that is neither registered nor ``scratch``."""
    known = [*PRETEXT_TASKS, SCRATCH]
    for i, name in enumerate(names):
        if name not in known:
            raise ValueError(f"pretrain.methods[{i}]: {name!r} is not one of {known} (a method defined elsewhere needs its module in pretrain.method_modules)")


def init_scratch(out_dir: PathLike, cfg: Mapping[str, Any]) -> Path:
    """Write ``encoder.pt`` of a randomly initialised encoder: the "scratch" floor of every table.

    Seeded with ``train.seed`` like every pretraining run's initialisation.

    Args:
        out_dir: e.g. ``results/pretrain/scratch``.
        cfg: the config's ``pretrain`` section (keys ``encoder`` and ``train``).
    """
    train_config = TrainConfig.from_dict(cfg.get("train", {}))
    torch.manual_seed(train_config.seed)
    encoder = ResidualEncoder(EncoderConfig.from_dict(cfg.get("encoder", {})))
    path = Path(out_dir) / ENCODER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    save_encoder(path, encoder, SCRATCH, 0)
    return path


def _as_list(value: PathLike | Sequence[PathLike]) -> list[Path]:
    return [Path(value)] if isinstance(value, (str, os.PathLike)) else [Path(v) for v in value]


def training_cases(manifest_paths: PathLike | Sequence[PathLike], proposals_roots: PathLike | Sequence[PathLike],
                   dataset_weights: Sequence[float] | None = None) -> pd.DataFrame:
    """The ``train`` split of one or more datasets: columns ``case_id``, ``image``, ``proposals``, ``weight``.

    Only the training split is read, so that validation and test cases never
    influence pretraining. ``proposals`` is ``<proposals_root>/<case_id>``.

    Args:
        manifest_paths: one ``manifest.parquet`` per dataset.
        proposals_roots: the matching proposal folders, in the same order.
        dataset_weights: one draw weight per dataset, given to each of its
            cases (a scan's weight is its dataset's, as in the MASS paper); all 1 if ``None``.
    """
    manifests, roots = _as_list(manifest_paths), _as_list(proposals_roots)
    weights = [1.0] * len(manifests) if dataset_weights is None else [float(w) for w in dataset_weights]
    if not len(manifests) == len(roots) == len(weights):
        raise ValueError(f"proposals_roots and dataset_weights must have one entry per manifest ({len(manifests)}), "
                         f"got {len(roots)} and {len(weights)}")
    frames = []
    for manifest, root, weight in zip(manifests, roots, weights):
        cases = read_manifest(manifest, split="train")[["case_id", "image"]].copy()
        cases["proposals"] = [str(root / case_id) for case_id in cases["case_id"]]
        cases["weight"] = weight
        frames.append(cases)
    cases = pd.concat(frames, ignore_index=True)
    if cases.empty:
        raise ValueError(f"no training cases in {[str(m) for m in manifests]}")
    return cases


def run_pretraining(
    method: str,
    manifest_paths: PathLike | Sequence[PathLike],
    proposals_roots: PathLike | Sequence[PathLike],
    out_dir: PathLike,
    cfg: Mapping[str, Any],
) -> TrainResult:
    """Pretrain ``method`` on the training cases and write its checkpoints into ``out_dir``.

    Args:
        method: a key of :data:`PRETEXT_TASKS` (``"mass"``, ...).
        manifest_paths: ``results/<dataset>/manifest.parquet`` of every pretraining dataset.
        proposals_roots: the matching ``results/<dataset>/proposals`` folders.
        out_dir: run folder, e.g. ``results/pretrain/<method>``.
        cfg: the config's ``pretrain`` section: ``train`` (see
            :class:`~mass_core.pretrain.trainer.TrainConfig`), ``encoder``
            (shared by all methods), one section per method, and
            ``method_modules`` when ``method`` is defined outside the package,
            and ``dataset_weights`` (one per manifest) when the datasets are
            drawn with weights.

    Returns:
        :class:`~mass_core.pretrain.trainer.TrainResult`; call sites exit with
        its ``exit_code`` (0 only when ``final.pt`` exists).
    """
    load_method_modules(cfg.get("method_modules", []))
    if method not in PRETEXT_TASKS:
        raise ValueError(f"method must be one of {sorted(PRETEXT_TASKS)}, got {method!r}")
    train_config = TrainConfig.from_dict(cfg.get("train", {}))
    sources = list(zip(_as_list(manifest_paths), _as_list(proposals_roots)))
    cases = training_cases(manifest_paths, proposals_roots, cfg.get("dataset_weights"))
    task = PRETEXT_TASKS[method].build(cases, cfg, sources)
    # The checkpoints carry task.method; evaluation and resume find the run by the registry's name.
    if task.method != method:
        raise ValueError(f"the task built for {method!r} writes checkpoints as {task.method!r}; the names must agree")
    return train(task, train_config, out_dir)
