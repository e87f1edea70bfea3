"""BraTS 2018 (brain tumour segmentation challenge), MRI: one dataset per modality.

The release (``MICCAI_BraTS_2018_Data_Training``) holds
``HGG/<subject>/<subject>_flair.nii.gz``, ``_t1``, ``_t1ce``, ``_t2`` and
``_seg``, and the same under ``LGG/``: co-registered, skull-stripped
volumes on one 1 mm grid. Point ``root`` at ``MICCAI_BraTS_2018_Data_Training``.

As in the official MASS code, FLAIR, T1 and T2 are three datasets
(``brats18_flair``, ``brats18_t1``, ``brats18_t2``; T1ce is not used) whose
cases are cropped with one box per subject: each case names the subject's
other modalities (:attr:`~mass_core.datasets.CaseSource.crop_with`), whose
foreground joins its own when the body crop is found. A subject's cases also
share a split across the three datasets. The release labels 1 (necrotic and
non-enhancing tumour core), 2 (peritumoral oedema) and 4 (enhancing tumour);
they become classes 1, 2, 3, where the official code keeps 4 and so leaves a
gap that breaks any evaluation by class id.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from mass_core.datasets import CaseSource, Listing
from mass_core.recipes.recipe import Recipe, missing

__all__ = ["MODALITIES", "RECIPES", "cases"]

GRADES = ("HGG", "LGG")
MODALITIES = ("flair", "t1", "t2")
# Release labels 1 NCR/NET, 2 ED, 4 ET: https://www.med.upenn.edu/sbia/brats2018/tasks.html
LABEL_VALUES = ((1, 1), (2, 2), (4, 3))


def cases(root: Path, modality: str) -> Listing:
    """One case per subject folder under ``HGG/`` and ``LGG/`` with this modality's image and a segmentation.

    A subject folder lacking either is left out and named in the listing.
    The subject's other modalities that exist join the crop, so its cases
    share a box even where the release lacks one of its files.
    """
    listing = Listing([])
    for folder in sorted(folder for grade in GRADES if (root / grade).is_dir()
                         for folder in (root / grade).iterdir() if folder.is_dir()):
        images = {name: folder / f"{folder.name}_{name}.nii.gz" for name in MODALITIES}
        label = folder / f"{folder.name}_seg.nii.gz"
        absent = [path for path in (images[modality], label) if not path.is_file()]
        if absent:
            listing.skipped.append(missing(folder.name, root, *absent))
            continue
        others = tuple(path for name, path in images.items() if name != modality and path.is_file())
        listing.cases.append(CaseSource(folder.name, images[modality], label, "MR", subject=folder.name,
                                        label_values=LABEL_VALUES, crop_with=others))
    return listing


RECIPES: dict[str, Recipe] = {
    f"brats18_{modality}": Recipe(
        layout=f"HGG/<subject>/<subject>_{modality}.nii.gz with <subject>_seg.nii.gz (also under LGG/; "
               "the MICCAI_BraTS_2018_Data_Training folder)",
        cases=partial(cases, modality=modality),
        classes={1: "necrotic and non-enhancing core", 2: "edema", 3: "enhancing tumor"},
    )
    for modality in MODALITIES
}
