"""The standardization and crop a model was trained with: recorded in its checkpoints, reused at inference.

A model only works on scans prepared like its training cases (same spacing,
CT window or MR/PET percentiles, body crop). The training stages collect the
settings from the ``meta.json`` of the cases they train on
(:func:`training_standardization`) and store them in every training
checkpoint (``standardization``, a list of plain dicts, see
:class:`~mass_core.pretrain.checkpoint.TrainingState`); ``mass-core infer``
takes them from there (:func:`resolve_standardization`), with settings given
on the command line taking precedence.

One record per distinct (modality, settings) pair: a run over datasets
standardized alike has one record, a run over CT and MR datasets (or over
datasets with their own ``datasets.<name>.standardize``) has several.

The crop the model was trained on (``crop_size`` of the checkpoint, MASS's
``pretrain.mass.sampler.crop_size``) is the default of inference's reference
crop and sliding window (:func:`resolve_window`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from mass_core.manifest import read_manifest
from mass_core.standardize import MODALITIES, StandardizeParams

__all__ = ["OPTIONS", "WINDOW_OPTIONS", "ResolvedStandardization", "ResolvedWindow", "resolve_standardization", "resolve_window",
           "training_standardization"]

_FIELDS = tuple(f.name for f in dataclasses.fields(StandardizeParams))
# A checkpoint without a record says nothing about the grid; every other
# setting falls back to the pipeline's default, which few configs change.
_REQUIRED_WITHOUT_RECORD = ("spacing_mm",)
# The settings ``mass-core infer`` can override, with their command-line options.
OPTIONS = {"spacing_mm": "--spacing X Y Z", "ct_clip_hu": "--ct-window LO HI", "percentiles": "--percentiles LO HI",
           "margin_mm": "--margin MM"}
# The window settings of ``mass-core infer`` that default to the training crop, with their command-line options
# (named apart from the standardization's ``roi``, the body crop, as both appear in one log line).
WINDOW_OPTIONS = {"reference_crop": "--crop X Y Z", "sliding_window": "--roi X Y Z"}


def training_standardization(manifest_paths: Sequence[str | os.PathLike], split: str | None = "train") -> list[dict[str, Any]]:
    """The distinct standardizations of the cases a model trains on, most cases first.

    Args:
        manifest_paths: the ``manifest.parquet`` of every training dataset.
        split: the split trained on; ``None`` reads every case.

    Returns:
        records ``{"modality", "params" (StandardizeParams fields), "cases"}``;
        cases whose ``meta.json`` predates the ``params`` entry (or a manifest
        without a ``meta`` column) are not counted.
    """
    counts: dict[str, int] = {}
    for manifest in manifest_paths:
        cases = read_manifest(manifest, split=split)
        # Manifests written by other tools may lack the column: their cases are not counted.
        for meta_path in cases["meta"] if "meta" in cases else ():
            meta = json.loads(Path(meta_path).read_text(encoding="utf-8"))
            if "params" not in meta:
                continue
            params = dataclasses.asdict(StandardizeParams(**{k: v for k, v in meta["params"].items() if k in _FIELDS}))
            key = json.dumps({"modality": meta["modality"], "params": params}, sort_keys=True)
            counts[key] = counts.get(key, 0) + 1
    records = [json.loads(key) | {"cases": n} for key, n in counts.items()]
    # Lists, not tuples: the record must read back equal from a weights-only checkpoint.
    return sorted(records, key=lambda r: (-r["cases"], r["modality"], json.dumps(r["params"], sort_keys=True)))


@dataclass(frozen=True)
class ResolvedStandardization:
    """What inference standardizes scans with, and where each setting came from.

    Attributes:
        modality: ``CT``, ``MR`` or ``PET``.
        params: the settings.
        sources: setting name (``modality`` and the StandardizeParams fields) ->
            ``"checkpoint"``, ``"checkpoint, most cases"`` (records disagree and
            no option sets it), ``"command line"`` or ``"default"``.
    """

    modality: str
    params: StandardizeParams
    sources: dict[str, str]

    def describe(self) -> str:
        """One line for the log, e.g. ``modality CT (checkpoint); spacing_mm 2.5 2.5 2.5 (checkpoint); ...``."""
        return _describe({"modality": self.modality, **{name: getattr(self.params, name) for name in _FIELDS}}, self.sources)


@dataclass(frozen=True)
class ResolvedWindow:
    """The reference crop and sliding window inference uses, and where each came from.

    Attributes:
        crop: reference crop ``(X, Y, Z)`` in voxels.
        roi: sliding window ``(X, Y, Z)`` in voxels.
        sources: ``reference_crop`` and ``sliding_window`` -> ``"checkpoint"`` or ``"command line"``.
    """

    crop: tuple[int, int, int]
    roi: tuple[int, int, int]
    sources: dict[str, str]

    def describe(self) -> str:
        """One line for the log, e.g. ``reference_crop 128 128 128 (checkpoint); sliding_window 96 96 96 (command line)``."""
        return _describe({"reference_crop": self.crop, "sliding_window": self.roi}, self.sources)


def _describe(values: Mapping[str, Any], sources: Mapping[str, str]) -> str:
    def show(value: Any) -> str:
        return " ".join(f"{v:g}" for v in value) if isinstance(value, tuple) else f"{value:g}" if isinstance(value, float) else str(value)

    return "; ".join(f"{name} {show(value)} ({sources[name]})" for name, value in values.items())


def resolve_standardization(records: Sequence[Mapping[str, Any]], modality: str | None, overrides: Mapping[str, Any],
                            source: str) -> ResolvedStandardization:
    """Standardization for inference: the checkpoint's record, with ``overrides`` on top.

    Args:
        records: the checkpoint's ``standardization`` (empty for checkpoints written before it existed).
        modality: the scans' modality; ``None`` takes the checkpoint's when it has one, else CT.
        overrides: StandardizeParams fields given by the user (e.g. ``{"spacing_mm": (2.5, 2.5, 2.5)}``).
        source: the checkpoint's name, for messages.

    Settings on which the records of ``modality`` agree come from the
    checkpoint; settings on which they differ must be in ``overrides``
    (those of :data:`OPTIONS`) or are the majority's (the others). A
    checkpoint without records needs ``spacing_mm`` in ``overrides``; its
    other settings take :class:`~mass_core.standardize.StandardizeParams`'s
    defaults (those of the pipeline's config).

    Raises:
        ValueError: a setting the checkpoint cannot decide is missing from
            ``overrides`` (the message names the command-line option), or an
            unknown modality or setting.
    """
    unknown = sorted(set(overrides) - set(_FIELDS))
    if unknown:
        raise ValueError(f"unknown standardize settings {unknown}; expected some of {list(_FIELDS)}")
    if modality is not None and modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    trained = sorted({r["modality"] for r in records})
    if modality is None and len(trained) > 1:
        raise ValueError(f"{source} was trained on {', '.join(trained)} scans; say which these are with --modality")
    chosen = modality if modality is not None else trained[0] if trained else "CT"
    sources = {"modality": "command line" if modality is not None else "checkpoint" if trained else "default"}
    # Records come most cases first: candidates[0] is the majority's.
    candidates = [r["params"] for r in records if r["modality"] == chosen]
    values: dict[str, Any] = {}
    undecided = []
    for name in _FIELDS:
        seen = sorted({json.dumps(c[name]) for c in candidates})
        if name in overrides:
            values[name], sources[name] = overrides[name], "command line"
        elif len(seen) == 1:
            values[name], sources[name] = candidates[0][name], "checkpoint"
        elif candidates and name not in OPTIONS:
            # No option sets it (crop and foreground details): the majority's setting.
            values[name], sources[name] = candidates[0][name], "checkpoint, most cases"
        elif candidates or name in _REQUIRED_WITHOUT_RECORD:
            undecided.append((name, seen))
        else:
            sources[name] = "default"
    if undecided:
        raise ValueError(_undecided_message(source, chosen, bool(candidates), bool(records), undecided))
    return ResolvedStandardization(chosen, StandardizeParams(**values), sources)


def resolve_window(trained_crop: Sequence[int], overrides: Mapping[str, Sequence[int]], source: str) -> ResolvedWindow:
    """Reference crop and sliding window for inference: the training crop, with ``overrides`` on top.

    Both default to the crop the model was trained on, as in the pipeline's
    held-out check: the model's InstanceNorm statistics depend on the field
    of view (see :class:`~mass_core.evaluate.fewshot.FewshotParams`).

    Args:
        trained_crop: the checkpoint's ``crop_size`` (empty for checkpoints written before it existed).
        overrides: ``reference_crop`` (``--crop``) and / or ``sliding_window`` (``--roi``)
            given by the user, e.g. ``{"sliding_window": (64, 64, 64)}``.
        source: the checkpoint's name, for messages.

    Raises:
        ValueError: the checkpoint records no crop and an option is missing
            from ``overrides`` (the message names it), or an unknown setting.
    """
    unknown = sorted(set(overrides) - set(WINDOW_OPTIONS))
    if unknown:
        raise ValueError(f"unknown window settings {unknown}; expected some of {list(WINDOW_OPTIONS)}")
    missing = [name for name in WINDOW_OPTIONS if name not in overrides]
    if not trained_crop and missing:
        asks = " and ".join(WINDOW_OPTIONS[name] for name in missing)
        raise ValueError(f"{source} records no training crop (written before checkpoints carried it); pass {asks} with the "
                         "pretraining crop size pretrain.mass.sampler.crop_size (the demo's config/config.yaml: 32 32 32)")
    values = {name: tuple(int(v) for v in overrides.get(name, trained_crop)) for name in WINDOW_OPTIONS}
    sources = {name: "command line" if name in overrides else "checkpoint" for name in WINDOW_OPTIONS}
    return ResolvedWindow(values["reference_crop"], values["sliding_window"], sources)


def _undecided_message(source: str, modality: str, has_candidates: bool, has_records: bool,
                       undecided: list[tuple[str, list[str]]]) -> str:
    asks = ", ".join(OPTIONS.get(name, name) for name, _ in undecided)
    if has_candidates:
        found = "; ".join(f"{name}: {' or '.join(seen)}" for name, seen in undecided)
        return f"{source} was trained on {modality} scans standardized in several ways ({found}); choose with {asks}"
    if has_records:
        return f"{source} records no standardization of {modality} scans; pass {asks} (the pretraining data's standardize settings)"
    return (f"{source} records no standardization (written before checkpoints carried it); pass {asks} with the pretraining "
            "data's standardize.spacing (the demo's config/config.yaml: --spacing 2.5 2.5 2.5)")
