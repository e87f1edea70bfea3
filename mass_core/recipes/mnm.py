"""M&Ms (multi-centre, multi-vendor and multi-disease cardiac segmentation, 2020), cine MRI.

The release (``OpenDataset``) holds ``Training/Labeled/<id>/<id>_sa.nii.gz``,
``Validation/<id>/...`` and ``Testing/<id>/...``: a 4D short-axis cine
(X, Y, Z, time) and ``<id>_sa_gt.nii.gz``, labeled only at end-diastole and
end-systole, whose frame numbers (from 0) the release's information table
(``211230_M&Ms_Dataset_information_diagnosis_opendataset.csv``, columns
``External code``, ``ED``, ``ES``) gives. ``Training/Unlabeled`` is not used.
Point ``root`` at ``OpenDataset``.

Each labeled frame is a case ``<id>_0``, ``<id>_1`` in time order (not
always ED first), as the official MASS code names them; both belong to
subject ``<id>``, so they share a split. The official code finds the labeled
frames by reading every label file; the table gives the same frames without
reading images while the workflow is planned, and a frame whose label turns
out empty fails with its reason. Labels: 1 left ventricle, 2 myocardium,
3 right ventricle.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mass_core.datasets import CaseSource, Listing
from mass_core.recipes.recipe import Recipe, missing

__all__ = ["RECIPE", "cases", "labeled_frames"]

PHASES = ("Training/Labeled", "Validation", "Testing")
TABLE_COLUMNS = ("External code", "ED", "ES")


def labeled_frames(root: Path) -> dict[str, tuple[int, ...]]:
    """Subject -> its labeled frames (ED and ES, from 0), in time order, from the release's table.

    Raises:
        ValueError: no CSV in ``root`` has the columns ``External code``,
            ``ED`` and ``ES``, or a subject's frame number is not a whole number >= 0.
    """
    for path in sorted(root.glob("*.csv")):
        table = pd.read_csv(path, encoding="utf-8-sig", dtype=str).rename(columns=str.strip)
        if set(TABLE_COLUMNS) <= set(table.columns):
            return {str(code).strip(): _frames(path, str(code).strip(), ed, es)
                    for code, ed, es in table[list(TABLE_COLUMNS)].itertuples(index=False)}
    raise ValueError(f"{root}: no CSV with columns {', '.join(TABLE_COLUMNS)} "
                     "(the release's 211230_M&Ms_Dataset_information_diagnosis_opendataset.csv)")


def _frames(path: Path, subject: str, *values: str) -> tuple[int, ...]:
    texts = [str(value).strip() for value in values]
    if not all(text.isdigit() for text in texts):
        raise ValueError(f"{path}: subject {subject!r}: ED/ES {texts} are not frame numbers >= 0")
    return tuple(sorted({int(text) for text in texts}))


def cases(root: Path) -> Listing:
    """One case per labeled frame of every subject folder holding ``<id>_sa.nii.gz`` and ``<id>_sa_gt.nii.gz``.

    A subject folder lacking either is left out and named (by subject) in the listing.

    Raises:
        ValueError: the frame table is missing or lacks a subject found on disk.
    """
    listing = Listing([])
    folders = []
    for folder in (folder for phase in PHASES if (root / phase).is_dir()
                   for folder in sorted((root / phase).iterdir()) if folder.is_dir()):
        absent = [path for path in (folder / f"{folder.name}_{name}.nii.gz" for name in ("sa", "sa_gt"))
                  if not path.is_file()]
        if absent:
            listing.skipped.append(missing(folder.name, root, *absent))
        else:
            folders.append(folder)
    if not folders:
        return listing
    frames = labeled_frames(root)
    for folder in folders:
        subject = folder.name
        if subject not in frames:
            raise ValueError(f"{root}: subject {subject!r} ({folder}) has no ED/ES row in the release's CSV")
        image, label = folder / f"{subject}_sa.nii.gz", folder / f"{subject}_sa_gt.nii.gz"
        for index, frame in enumerate(frames[subject]):
            listing.cases.append(CaseSource(f"{subject}_{index}", image, label, "MR", subject=subject, frame=frame))
    return listing


RECIPE = Recipe(
    layout="Training/Labeled/<id>/<id>_sa.nii.gz and <id>_sa_gt.nii.gz (also under Validation/ and Testing/) "
           "with the ED/ES table *.csv beside them (the M&Ms OpenDataset folder)",
    cases=cases,
    # Not ACDC's order (1 RV, 3 LV): MIC-DKFZ/nnUNet nnunet/dataset_conversion/Task114_heart_MNMs.py.
    classes={1: "left ventricle", 2: "myocardium", 3: "right ventricle"},
)
