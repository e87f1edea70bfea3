"""Pipeline entry of the pretrain stage: manifests + proposals -> a trained pretext model.

Every method name maps to a task factory in :data:`PRETEXT_TASKS`; the
baselines (MIM, MiM) add theirs here and share everything else.
"""

from __future__ import annotations

import os
import sys
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

__all__ = ["PRETEXT_TASKS", "init_scratch", "run_pretraining", "training_cases"]

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
    return MassTask(stores, config, _heldout_checks(config, sources) if validate else [])


def _images(cases: pd.DataFrame) -> list[ImageCase]:
    return [ImageCase(row.case_id, Path(row.image)) for row in cases.itertuples()]


def _mim_task(cases: pd.DataFrame, cfg: Mapping[str, Any], sources: Sequence[tuple[Path, Path]]) -> PretextTask:
    return MimTask(_images(cases), MimConfig.from_config(cfg.get("encoder", {}), cfg.get("mim", {})))


def _mim_hier_task(cases: pd.DataFrame, cfg: Mapping[str, Any], sources: Sequence[tuple[Path, Path]]) -> PretextTask:
    return MimHierTask(_images(cases), MimHierConfig.from_config(cfg.get("encoder", {}), cfg.get("mim_hier", {})))


# method -> factory(training cases, the ``pretrain`` config section, (manifest, proposals root) per dataset) -> task.
PRETEXT_TASKS: dict[str, Callable[[pd.DataFrame, Mapping[str, Any], Sequence[tuple[Path, Path]]], PretextTask]] = {
    "mass": _mass_task,
    "mim": _mim_task,
    "mim_hier": _mim_hier_task,
}


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
    save_encoder(path, encoder, "scratch", 0)
    return path


def _as_list(value: PathLike | Sequence[PathLike]) -> list[Path]:
    return [Path(value)] if isinstance(value, (str, os.PathLike)) else [Path(v) for v in value]


def training_cases(manifest_paths: PathLike | Sequence[PathLike], proposals_roots: PathLike | Sequence[PathLike]) -> pd.DataFrame:
    """The ``train`` split of one or more datasets: columns ``case_id``, ``image``, ``proposals``.

    Only the training split is read, so that validation and test cases never
    influence pretraining. ``proposals`` is ``<proposals_root>/<case_id>``.

    Args:
        manifest_paths: one ``manifest.parquet`` per dataset.
        proposals_roots: the matching proposal folders, in the same order.
    """
    manifests, roots = _as_list(manifest_paths), _as_list(proposals_roots)
    if len(manifests) != len(roots):
        raise ValueError(f"proposals_roots must have one entry per manifest ({len(manifests)}), got {len(roots)}")
    frames = []
    for manifest, root in zip(manifests, roots):
        cases = read_manifest(manifest, split="train")[["case_id", "image"]].copy()
        cases["proposals"] = [str(root / case_id) for case_id in cases["case_id"]]
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
            (shared by all methods) and one section per method.

    Returns:
        :class:`~mass_core.pretrain.trainer.TrainResult`; call sites exit with
        its ``exit_code`` (0 only when ``final.pt`` exists).
    """
    if method not in PRETEXT_TASKS:
        raise ValueError(f"method must be one of {sorted(PRETEXT_TASKS)}, got {method!r}")
    train_config = TrainConfig.from_dict(cfg.get("train", {}))
    sources = list(zip(_as_list(manifest_paths), _as_list(proposals_roots)))
    task = PRETEXT_TASKS[method](training_cases(manifest_paths, proposals_roots), cfg, sources)
    return train(task, train_config, out_dir)
