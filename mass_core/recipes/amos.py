"""AMOS22 (abdominal multi-organ segmentation), one release holding CT and MR.

The release (``amos22.zip`` from https://zenodo.org/records/7262581) holds
``imagesTr``/``labelsTr`` and ``imagesVa``/``labelsVa`` with files
``amos_0001.nii.gz`` and a ``dataset.json``; ``imagesTs`` has no labels and
is not read (as in the official MASS code). Point ``root`` at the folder
holding ``imagesTr``. The official code makes two datasets of it by case
number: below 500 CT (``amos_ct``), from 500 MR (``amos_mr``). MR labels
use classes 1-13 only (no bladder, no prostate/uterus).
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

from mass_core.datasets import CaseSource, Listing
from mass_core.recipes.recipe import Recipe

__all__ = ["FIRST_MR_CASE", "RECIPES", "cases"]

FIRST_MR_CASE = 500
_NAME = re.compile(r"amos_(\d+)\.nii\.gz")
# The release's dataset.json order, as in uni-medical/A-Eval Evaluation/label_systems.py (AMOS_label).
_CLASSES = {1: "spleen", 2: "right kidney", 3: "left kidney", 4: "gallbladder", 5: "esophagus", 6: "liver",
            7: "stomach", 8: "aorta", 9: "inferior vena cava", 10: "pancreas", 11: "right adrenal gland",
            12: "left adrenal gland", 13: "duodenum", 14: "bladder", 15: "prostate/uterus"}


def cases(root: Path, modality: str) -> Listing:
    """The training and validation cases of one modality (``CT``: numbers below 500, ``MR``: the rest)."""
    found = []
    for images, labels in (("imagesTr", "labelsTr"), ("imagesVa", "labelsVa")):
        for image in sorted((root / images).glob("amos_*.nii.gz")):
            match = _NAME.fullmatch(image.name)
            if match is None or (int(match.group(1)) < FIRST_MR_CASE) != (modality == "CT"):
                continue
            label = root / labels / image.name
            found.append(CaseSource(image.name.removesuffix(".nii.gz"), image, label if label.is_file() else None, modality))
    return Listing(found)


_LAYOUT = "imagesTr/amos_0001.nii.gz with labelsTr/amos_0001.nii.gz, and imagesVa with labelsVa (the amos22 folder)"
RECIPES: dict[str, Recipe] = {
    "amos_ct": Recipe(layout=_LAYOUT, cases=partial(cases, modality="CT"), classes=_CLASSES),
    "amos_mr": Recipe(layout=_LAYOUT, cases=partial(cases, modality="MR"), classes={k: v for k, v in _CLASSES.items() if k <= 13}),
}
