"""Regroup the RSNA ICH Kaggle release into the layout :mod:`mass_core.recipes.rsna_ich` reads.

Reads each slice's header (StudyInstanceUID, SeriesInstanceUID), hard-links
the file into ``<out>/studies/<study>/<series>/`` (a copy where the file
system cannot link) and writes ``<out>/classes.csv`` from the release's
per-slice label CSV: one row per series, ``class_label`` 1 when any slice's
``any`` label is 1. Rerunning skips slices already in place.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pydicom
from pydicom import config
from pydicom.errors import InvalidDicomError

from mass_core.atomic import write_with
from mass_core.recipes.rsna_ich import CASE_TABLE, STUDIES

__all__ = ["Prepared", "group_slices", "main", "prepare", "series_labels"]


@dataclass(frozen=True)
class Prepared:
    """What :func:`prepare` did: series found, series without any labeled slice, unreadable slice files."""

    series: int
    unlabeled_series: list[str]
    unreadable: list[Path]


def group_slices(slices: Path, out: Path) -> list[Path]:
    """Link every ``*.dcm`` in ``slices`` into ``out/studies/<study>/<series>/``; returns the unreadable files."""
    unreadable = []
    # The release's UIDs ("ID_...") break the UID syntax; pydicom would warn and log for every file.
    saved, config.settings.reading_validation_mode = config.settings.reading_validation_mode, config.IGNORE
    try:
        for path in sorted(slices.glob("*.dcm")):
            if not _link_into_series(path, out):
                unreadable.append(path)
    finally:
        config.settings.reading_validation_mode = saved
    return unreadable


def _link_into_series(path: Path, out: Path) -> bool:
    """Link one slice into its series folder; ``False`` if its header cannot be read."""
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID", "SeriesInstanceUID"])
        folder = out / STUDIES / str(header.StudyInstanceUID) / str(header.SeriesInstanceUID)
    except (InvalidDicomError, OSError, AttributeError):
        return False
    target = folder / path.name
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:  # another file system, or links not allowed
            shutil.copy2(path, target)
    return True


def series_labels(labels_csv: Path, out: Path) -> pd.DataFrame:
    """``case_id`` (series) and ``class_label`` (any haemorrhage in any slice; empty if no slice is labeled).

    Raises:
        ValueError: the CSV lacks the release's ``ID`` and ``Label`` columns.
    """
    table = pd.read_csv(labels_csv)
    if not {"ID", "Label"} <= set(table.columns):
        raise ValueError(f"{labels_csv}: expected the release's columns ID and Label, found {list(table.columns)}")
    kind = table["ID"].str.rsplit("_", n=1, expand=True)
    # The release repeats some rows; a slice is positive if any of its rows says so.
    any_haemorrhage = table.loc[kind[1] == "any", "Label"].groupby(kind.loc[kind[1] == "any", 0]).max()
    rows = [(series.name, any_haemorrhage.reindex([dcm.stem for dcm in series.glob("*.dcm")]).max())
            for series in sorted((out / STUDIES).glob("*/*")) if series.is_dir()]
    result = pd.DataFrame(rows, columns=["case_id", "class_label"])
    result["class_label"] = result["class_label"].astype("Int64")
    return result


def prepare(slices: Path, labels_csv: Path, out: Path) -> Prepared:
    """Group the slices and write ``out/classes.csv``."""
    unreadable = group_slices(slices, out)
    table = series_labels(labels_csv, out)
    write_with(out / CASE_TABLE, lambda path: table.to_csv(path, index=False))
    return Prepared(len(table), sorted(table.loc[table["class_label"].isna(), "case_id"]), unreadable)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m mass_core.recipes.rsna_ich_prepare --slices ... --labels ... --out ...``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=Path, required=True, help="the release's slice folder (stage_2_train)")
    parser.add_argument("--labels", type=Path, required=True, help="the release's label CSV (stage_2_train.csv)")
    parser.add_argument("--out", type=Path, required=True, help="the dataset root the recipe will read")
    args = parser.parse_args(argv)
    try:
        done = prepare(args.slices, args.labels, args.out)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{done.series} series in {args.out / STUDIES}; case table {args.out / CASE_TABLE}")
    if done.unlabeled_series:
        print(f"{len(done.unlabeled_series)} series have no labeled slice (class_label left empty): "
              f"{', '.join(done.unlabeled_series[:5])}")
    if done.unreadable:
        print(f"{len(done.unreadable)} unreadable files left out: {', '.join(p.name for p in done.unreadable[:5])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
