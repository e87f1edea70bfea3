"""autoPET (FDG-PET-CT-Lesions, whole-body PET/CT with lesion masks): a CT and a PET-SUV dataset.

The NIfTI release holds one folder per patient, ``PETCT_<hash>/``, with one
folder per study named after its date (``08-12-2005-NA-PET-CT Ganzkoerper
...``), each with ``CT.nii.gz``, ``CTres.nii.gz`` (the CT resampled onto the
PET grid), ``PET.nii.gz``, ``SUV.nii.gz`` and ``SEG.nii.gz`` (lesions, on the
PET grid). Point ``root`` at the folder holding the ``PETCT_*`` folders.

As in the official MASS code, a patient's studies are sorted by date (the
``MM-DD-YYYY`` in the folder name; folders without one follow, by
name) and become cases ``<patient>_<k>``; the PET dataset (``autopet_suv``)
reads ``SUV.nii.gz``. The CT dataset (``autopet_ct``) reads the original
``CT.nii.gz`` and resamples the PET-grid mask onto it, where the official
code reads ``CTres.nii.gz``, a CT already degraded to the PET's coarser
grid. Every case names its patient as subject, so all of a patient's studies
land in one split, and in the same split in both datasets; the official
split lists put 54 studies of patients in the SUV test split into the CT
training split.
"""

from __future__ import annotations

import re
from datetime import date
from functools import partial
from pathlib import Path

from mass_core.datasets import CaseSource, Listing
from mass_core.recipes.recipe import Recipe, missing

__all__ = ["RECIPES", "cases", "studies"]

_DATE = re.compile(r"(\d{2})-(\d{2})-(\d{4})")


def _study_date(folder: Path) -> date | None:
    match = _DATE.search(folder.name)
    if match is None:
        return None
    month, day, year = (int(part) for part in match.groups())
    try:
        return date(year, month, day)
    except ValueError:
        return None


def studies(patient: Path) -> list[Path]:
    """A patient's study folders, oldest first; folders without a valid date follow, by name."""
    folders = [folder for folder in patient.iterdir() if folder.is_dir() and not folder.name.startswith(".")]
    dated = sorted((d, folder.name, folder) for folder in folders if (d := _study_date(folder)) is not None)
    undated = sorted((folder for folder in folders if _study_date(folder) is None), key=lambda folder: folder.name)
    return [folder for *_, folder in dated] + undated


def cases(root: Path, image_name: str, modality: str, label_on_other_grid: bool) -> Listing:
    """One case ``<patient>_<k>`` per study folder holding ``image_name``, in every ``PETCT_*`` patient folder.

    Studies are numbered before those without the image are left out (and
    named in the listing), so a study has the same number in the CT and the
    PET dataset.
    """
    listing = Listing([])
    for patient in sorted(folder for folder in root.glob("PETCT_*") if folder.is_dir()):
        for index, study in enumerate(studies(patient)):
            if not (study / image_name).is_file():
                listing.skipped.append(missing(f"{patient.name}_{index}", root, study / image_name))
                continue
            label = study / "SEG.nii.gz"
            listing.cases.append(CaseSource(f"{patient.name}_{index}", study / image_name,
                                            label if label.is_file() else None, modality, subject=patient.name,
                                            label_on_other_grid=label_on_other_grid))
    return listing


_LAYOUT = "PETCT_<hash>/<MM-DD-YYYY study folder>/{image} with SEG.nii.gz (the FDG-PET-CT-Lesions NIfTI release)"
RECIPES: dict[str, Recipe] = {
    name: Recipe(layout=_LAYOUT.format(image=image), classes={1: "lesion"},
                 cases=partial(cases, image_name=image, modality=modality, label_on_other_grid=modality == "CT"))
    for name, image, modality in (("autopet_ct", "CT.nii.gz", "CT"), ("autopet_suv", "SUV.nii.gz", "PET"))
}
