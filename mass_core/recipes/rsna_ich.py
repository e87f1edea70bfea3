"""RSNA intracranial haemorrhage detection (RSNA ICH, Kaggle 2019), head CT, study-level labels.

The Kaggle release (https://www.kaggle.com/c/rsna-intracranial-hemorrhage-detection)
is one folder of single-slice DICOM files (``stage_2_train/ID_xxx.dcm``)
and a CSV of per-slice labels (``stage_2_train.csv``: ``ID_xxx_any``,
``ID_xxx_epidural``, ... with 0/1). A scan is the set of slices sharing a
SeriesInstanceUID; finding them means reading every file's header, too slow
for listing cases while Snakemake builds its graph. So this recipe reads the
release once regrouped by :mod:`mass_core.recipes.rsna_ich_prepare`::

    python -m mass_core.recipes.rsna_ich_prepare --slices stage_2_train \\
        --labels stage_2_train.csv --out /data/rsna_ich

which links the slices into ``studies/<StudyInstanceUID>/<SeriesInstanceUID>/``
and writes ``classes.csv`` (case id = series, ``class_label`` 1 when any
of its slices shows a haemorrhage of any type, else 0). Point ``root`` at
``/data/rsna_ich`` and set ``class_table: classes.csv``. The study is
each case's subject, so a study's series share a split.
"""

from __future__ import annotations

from pathlib import Path

from mass_core.datasets import CaseSource, Listing
from mass_core.recipes.recipe import Recipe

__all__ = ["CASE_TABLE", "RECIPE", "STUDIES", "cases"]

STUDIES = "studies"
CASE_TABLE = "classes.csv"


def cases(root: Path) -> Listing:
    """One case per series folder ``studies/<study>/<series>/`` (a DICOM series, no label map)."""
    studies = root / STUDIES
    if not studies.is_dir():
        return Listing([])
    return Listing([CaseSource(series.name, series, None, "CT", subject=study.name)
                    for study in sorted(studies.iterdir()) if study.is_dir()
                    for series in sorted(series for series in study.iterdir() if series.is_dir())])


RECIPE = Recipe(
    layout=(f"{STUDIES}/<StudyInstanceUID>/<SeriesInstanceUID>/*.dcm and {CASE_TABLE}, as written by "
            "`python -m mass_core.recipes.rsna_ich_prepare` from the Kaggle release"),
    cases=cases,
)
