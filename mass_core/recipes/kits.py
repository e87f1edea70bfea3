"""KiTS19 (kidney tumour segmentation challenge 2019), CT.

The release (``git clone https://github.com/neheller/kits19`` then its
``get_imaging.py``) holds ``data/case_00000/imaging.nii.gz`` and
``segmentation.nii.gz``; the 90 test cases (210-299) have no segmentation.
Point ``root`` at ``data``. Labels: 1 kidney, 2 tumour.
"""

from __future__ import annotations

from pathlib import Path

from mass_core.datasets import CaseSource, Listing
from mass_core.recipes.recipe import Recipe, missing

__all__ = ["RECIPE", "cases"]


def cases(root: Path) -> Listing:
    """One case per ``case_*`` folder with an ``imaging.nii.gz``; folders without one are left out, named."""
    listing = Listing([])
    for folder in sorted(path for path in root.glob("case_*") if path.is_dir()):
        image = folder / "imaging.nii.gz"
        if not image.is_file():
            listing.skipped.append(missing(folder.name, root, image))
            continue
        label = folder / "segmentation.nii.gz"
        listing.cases.append(CaseSource(folder.name, image, label if label.is_file() else None, "CT"))
    return listing


RECIPE = Recipe(
    layout="case_XXXXX/imaging.nii.gz with case_XXXXX/segmentation.nii.gz (the kits19 repository's data folder)",
    cases=cases,
    classes={1: "kidney", 2: "tumor"},  # neheller/kits19 README.md
)
