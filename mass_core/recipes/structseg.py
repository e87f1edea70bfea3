"""StructSeg 2019 (automatic structure segmentation for radiotherapy planning), CT.

Two of the challenge's tasks are datasets of the MASS paper: task 1,
head-and-neck organs at risk (``HaN_OAR``, 50 patients, 22 organs), and
task 3, thoracic organs at risk (``Thoracic_OAR``, 50 patients, 6 organs).
The release (https://structseg2019.grand-challenge.org, on registration)
holds one folder per patient, ``1/data.nii.gz`` with ``1/label.nii.gz``.
Point ``root`` at ``HaN_OAR`` or ``Thoracic_OAR``. The case id is the
patient's folder number, as in the official split lists.
"""

from __future__ import annotations

from pathlib import Path

from mass_core.datasets import CaseSource, Listing
from mass_core.recipes.recipe import Recipe, missing

__all__ = ["RECIPES", "cases"]


def _nifti(folder: Path, stem: str) -> Path | None:
    return next((path for path in (folder / f"{stem}.nii.gz", folder / f"{stem}.nii") if path.is_file()), None)


def cases(root: Path) -> Listing:
    """One case per numbered folder holding a ``data.nii[.gz]``, labeled by ``label.nii[.gz]``.

    A numbered folder without the image is left out and named in the listing.
    """
    listing = Listing([])
    for folder in sorted(path for path in root.iterdir() if path.is_dir() and path.name.isdigit()):
        image = _nifti(folder, "data")
        if image is None:
            listing.skipped.append(missing(folder.name, root, folder / "data.nii.gz", folder / "data.nii"))
            continue
        listing.cases.append(CaseSource(folder.name, image, _nifti(folder, "label"), "CT"))
    return listing


_LAYOUT = "one numbered folder per patient holding data.nii.gz and label.nii.gz (the task's HaN_OAR or Thoracic_OAR folder)"
# Label order of the release's readme (task 1: Brain_Stem, Eye_L, Eye_R, ... Mandible_L, Mandible_R; task 3:
# Lung_L, Lung_R, Heart, Esophagus, Trachea, Spinal_Cord, "corresponding to the label 1 to N"), as transcribed in
# github.com/zhilothebest/Coronary_Calcium README.md and constantinpape/torch-em
# torch_em/data/datasets/medical/structseg.py; task 3 also in MIC-DKFZ/MultiTalent Task100_MultiTalent.py.
# The organ list on the challenge website is in another order.
_HEAD_OAR = {1: "brainstem", 2: "left eye", 3: "right eye", 4: "left lens", 5: "right lens", 6: "left optic nerve",
             7: "right optic nerve", 8: "optic chiasm", 9: "left temporal lobe", 10: "right temporal lobe",
             11: "pituitary", 12: "left parotid gland", 13: "right parotid gland", 14: "left inner ear",
             15: "right inner ear", 16: "left middle ear", 17: "right middle ear", 18: "left temporomandibular joint",
             19: "right temporomandibular joint", 20: "spinal cord", 21: "left mandible", 22: "right mandible"}
_THORACIC_OAR = {1: "left lung", 2: "right lung", 3: "heart", 4: "esophagus", 5: "trachea", 6: "spinal cord"}
RECIPES: dict[str, Recipe] = {
    "structseg_head_oar": Recipe(layout=_LAYOUT, cases=cases, classes=_HEAD_OAR),
    "structseg_thoracic_oar": Recipe(layout=_LAYOUT, cases=cases, classes=_THORACIC_OAR),
}
