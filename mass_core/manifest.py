"""The manifest stage: one table per dataset of every usable case.

Reads the standardized cases' ``meta.json`` files (and an optional case table
with classification labels and fixed splits), assigns deterministic
train/val/test splits, and writes ``manifest.parquet`` plus ``skipped.csv``,
which lists every case left out and why: those standardize skipped, and the
case folders the dataset's listing could not use (stage ``listing``, recorded
by :func:`write_listing_skip`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from mass_core.atomic import write_json, write_with
from mass_core.config_section import from_section

__all__ = ["SPLITS", "SplitParams", "assign_splits", "build_manifest", "read_case_table", "read_case_tables", "read_manifest",
           "write_listing_skip"]

SPLITS = ("train", "val", "test")
SKIPPED_COLUMNS = ["case_id", "stage", "reason"]


@dataclass(frozen=True)
class SplitParams:
    """How cases without a fixed split are divided (config key ``splits``).

    Args:
        val_fraction: share of cases for validation (model selection).
        test_fraction: share of cases held out for the final numbers only.
        seed: seed of the permutation; the same ids and seed give the same splits.
    """

    val_fraction: float = 0.15
    test_fraction: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if self.val_fraction < 0 or self.test_fraction < 0 or self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"val_fraction and test_fraction must be >= 0 and sum below 1, got {self.val_fraction}, {self.test_fraction}")

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> SplitParams:
        """Build from the config's ``splits`` section; unknown keys raise ``ValueError``."""
        return from_section(cls, section, "splits")


def read_case_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a case table: ``case_id`` plus optional ``class_label`` and ``split`` columns."""
    table = pd.read_csv(path, dtype={"case_id": str})
    if "case_id" not in table.columns:
        raise ValueError(f"{path}: a case table needs a 'case_id' column, found {list(table.columns)}")
    if table["case_id"].duplicated().any():
        raise ValueError(f"{path}: duplicate case ids {sorted(table.loc[table['case_id'].duplicated(), 'case_id'])}")
    if "split" in table.columns:
        bad = sorted(set(table["split"].dropna()) - set(SPLITS))
        if bad:
            raise ValueError(f"{path}: unknown split names {bad}; expected {SPLITS}")
    if "class_label" in table.columns:
        table["class_label"] = pd.array([_class_label(path, cid, value) for cid, value in zip(table["case_id"], table["class_label"])],
                                        dtype="Int64")
    return table


def read_case_tables(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Case tables joined on ``case_id`` (a dataset's own table and a shipped split table).

    Raises:
        ValueError: two tables give one case different values of a column.
    """
    merged = pd.DataFrame({"case_id": pd.Series(dtype=str)})
    for path in paths:
        table = read_case_table(path)
        shared = [column for column in table.columns if column != "case_id" and column in merged.columns]
        merged = merged.merge(table, on="case_id", how="outer", suffixes=("", "_new"))
        for column in shared:
            old, new = merged[column], merged.pop(f"{column}_new")
            clash = old.notna() & new.notna() & (old.astype(str) != new.astype(str))
            if clash.any():
                first = merged.index[clash][0]
                raise ValueError(f"case {merged.at[first, 'case_id']!r}: {column} {old[first]!r} in an earlier table but "
                                 f"{new[first]!r} in {path}")
            merged[column] = old.where(old.notna(), new)
    return merged


def _class_label(path: str | os.PathLike, case_id: str, value: Any) -> int | None:
    """A case table's ``class_label`` as an int (``None`` where empty); anything but a whole number raises."""
    if pd.isna(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number.is_integer():
        raise ValueError(f"{path}: case {case_id!r}: class_label {value!r} is not an integer class id")
    return int(number)


def assign_splits(case_ids: Iterable[str], strata: dict[str, int], fixed: dict[str, str], params: SplitParams,
                  subjects: Mapping[str, str] | None = None) -> dict[str, str]:
    """Assign each case to train, val or test.

    Cases in ``fixed`` keep their split. The others are shuffled with
    ``params.seed`` within each stratum (classification label, so that every
    split sees every class) and cut by the fractions, rounded per stratum.

    Cases with a subject (several studies, frames or modalities of one
    patient) are split by subject instead: all of a subject's cases share
    the split of its fixed cases, or else the split drawn from a hash of the
    seed and the subject id. The draw depends on nothing else, so every
    dataset holding a subject (a CT and a PET dataset of the same studies)
    puts it in the same split, whichever cases each could read; the
    fractions then hold on average, not exactly, and strata do not apply.

    Args:
        case_ids: all usable case ids.
        strata: case id -> stratum (for example the class label); missing ids share one stratum.
        fixed: case id -> split given by the dataset.
        subjects: case id -> subject; cases missing from it are split one by one.
    """
    subjects = subjects or {}
    case_ids = list(case_ids)
    rng = np.random.default_rng(params.seed)
    splits = {cid: fixed[cid] for cid in case_ids if cid in fixed}
    subject_splits: dict[str, str] = {}
    for cid in sorted(splits):
        if cid in subjects:
            subject_splits.setdefault(subjects[cid], splits[cid])
    free = []
    for cid in sorted(cid for cid in case_ids if cid not in fixed):
        if cid in subjects:
            splits[cid] = subject_splits.setdefault(subjects[cid], _subject_split(subjects[cid], params))
        else:
            free.append(cid)
    groups: dict[int, list[str]] = {}
    for cid in free:
        groups.setdefault(strata.get(cid, -1), []).append(cid)
    for stratum in sorted(groups):
        members = [groups[stratum][i] for i in rng.permutation(len(groups[stratum]))]
        n_test = int(round(params.test_fraction * len(members)))
        n_val = int(round(params.val_fraction * len(members)))
        for position, cid in enumerate(members):
            splits[cid] = "test" if position < n_test else "val" if position < n_test + n_val else "train"
    return splits


def _subject_split(subject: str, params: SplitParams) -> str:
    """The split of a subject: a uniform draw in [0, 1) from a hash of seed and id, cut by the fractions."""
    # A hash rather than a permutation, so that the split does not depend on
    # which other subjects a dataset holds.
    digest = hashlib.sha256(f"{params.seed}:{subject}".encode()).digest()
    draw = int.from_bytes(digest[:8], "big") / 2**64
    if draw < params.test_fraction:
        return "test"
    return "val" if draw < params.test_fraction + params.val_fraction else "train"


def build_manifest(
    meta_paths: Iterable[str | os.PathLike],
    manifest_path: str | os.PathLike,
    skipped_path: str | os.PathLike,
    params: SplitParams,
    case_table: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
) -> pd.DataFrame:
    """Write ``manifest.parquet`` and ``skipped.csv`` from standardized cases.

    Args:
        meta_paths: each case's ``meta.json`` (its folder holds ``image.npy``),
            or a skipped case's (standardize's, or :func:`write_listing_skip`'s).
        case_table: optional CSV (or several, joined by :func:`read_case_tables`)
            with ``class_label`` and/or ``split`` per case.

    Returns:
        the manifest, one row per usable case, sorted by case id.
    """
    metas = [json.loads(Path(p).read_text(encoding="utf-8")) | {"_dir": str(Path(p).parent)} for p in meta_paths]
    tables = [] if not case_table else [case_table] if isinstance(case_table, (str, os.PathLike)) else list(case_table)
    table = read_case_tables(tables)
    class_labels = {str(k): int(v) for k, v in zip(table["case_id"], table.get("class_label", pd.Series(dtype=float))) if pd.notna(v)}
    fixed = {str(k): str(v) for k, v in zip(table["case_id"], table.get("split", pd.Series(dtype=object))) if pd.notna(v)}
    usable = sorted((m for m in metas if m["status"] == "ok"), key=lambda m: m["case_id"])
    skipped = [{"case_id": m["case_id"], "stage": m.get("stage", "standardize"), "reason": m["reason"]} for m in metas if m["status"] != "ok"]
    subjects = {m["case_id"]: m["subject"] for m in usable if m.get("subject") is not None}
    splits = assign_splits([m["case_id"] for m in usable], class_labels, fixed, params, subjects)
    manifest = pd.DataFrame([_row(m, splits[m["case_id"]], class_labels.get(m["case_id"], -1)) for m in usable])
    write_with(manifest_path, lambda tmp: manifest.to_parquet(tmp, index=False))
    skipped_frame = pd.DataFrame(sorted(skipped, key=lambda r: r["case_id"]), columns=SKIPPED_COLUMNS)
    write_with(skipped_path, lambda tmp: skipped_frame.to_csv(tmp, index=False))
    return manifest


def write_listing_skip(case_id: str, reason: str, meta_path: str | os.PathLike) -> None:
    """Record a case folder the listing left out (:class:`~mass_core.datasets.SkippedCase`) as a skipped case.

    The ``meta.json`` has ``"status": "skipped"`` and ``"stage": "listing"``,
    so :func:`build_manifest` lists it in ``skipped.csv`` like a case that
    standardize skipped. The case never reached standardize: its raw files
    are that job's inputs, and a missing one would stop the whole run.
    """
    write_json(meta_path, {"status": "skipped", "case_id": case_id, "stage": "listing", "reason": reason})


def _row(meta: dict[str, Any], split: str, class_label: int) -> dict[str, Any]:
    folder = Path(meta["_dir"])
    has_label = meta["source"]["label"] is not None
    row: dict[str, Any] = {
        "case_id": meta["case_id"],
        "image": str(folder / "image.npy"),
        "label": str(folder / "label.npy") if has_label else "",
        "meta": str(folder / "meta.json"),
        "modality": meta["modality"],
        "split": split,
        "class_label": class_label,
        "label_classes": list(meta["label_classes"]),
        # Cases standardized before ignore labels existed have no count: none were ignored.
        "ignored_voxels": int(meta.get("ignored_voxels", 0)),
    }
    for axis, name in enumerate("xyz"):
        row[f"shape_{name}"] = int(meta["shape"][axis])
        row[f"spacing_{name}"] = float(meta["spacing"][axis])
        row[f"original_spacing_{name}"] = float(meta["original"]["spacing"][axis])
    return row


def read_manifest(path: str | os.PathLike, split: str | None = None) -> pd.DataFrame:
    """Read a dataset manifest, optionally only one split."""
    manifest = pd.read_parquet(path)
    if split is not None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        manifest = manifest[manifest["split"] == split].reset_index(drop=True)
    return manifest
