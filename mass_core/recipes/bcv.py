"""BTCV (Multi-Atlas Labeling Beyond the Cranial Vault, "Synapse" multi-organ), abdominal CT.

The release (Synapse project syn3193805, ``RawData.zip``) unpacks to
``RawData/Training/img/img0001.nii.gz`` with ``RawData/Training/label/label0001.nii.gz``
(30 labeled cases) and ``RawData/Testing/img`` (20 cases without labels,
not read, as in the official MASS code). Point ``root`` at ``RawData/Training``
(the official code's input folder) or at a folder above it holding
``RawData/Training`` or ``Training``.

The files' direction cosines are wrong: the official code overwrites both
headers with (1,0,0, 0,-1,0, 0,0,1) before reorienting, and so does this
recipe (:attr:`~mass_core.datasets.CaseSource.direction`); without it left
and right (and front and back) are swapped.
"""

from __future__ import annotations

from pathlib import Path

from mass_core.datasets import CaseSource, Listing
from mass_core.recipes.recipe import Recipe

__all__ = ["DIRECTION", "RECIPE", "cases"]

# The true axes of every BTCV volume, in SimpleITK (LPS) terms.
DIRECTION = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def _training_folder(root: Path) -> Path:
    """The folder holding ``img`` and ``label``: ``root`` itself or the release's ``[RawData/]Training`` below it."""
    for folder in (root, root / "Training", root / "RawData" / "Training"):
        if (folder / "img").is_dir():
            return folder
    return root


def cases(root: Path) -> Listing:
    """One case per ``img/imgNNNN.nii.gz``, labeled by ``label/labelNNNN.nii.gz``, headers fixed."""
    folder = _training_folder(root)
    found = []
    for image in sorted((folder / "img").glob("img*.nii.gz")):
        case_id = image.name.removesuffix(".nii.gz")
        label = folder / "label" / f"label{case_id.removeprefix('img')}.nii.gz"
        found.append(CaseSource(case_id, image, label if label.is_file() else None, "CT", direction=DIRECTION))
    return Listing(found)


RECIPE = Recipe(
    layout="img/img0001.nii.gz with label/label0001.nii.gz (the release's RawData/Training folder)",
    cases=cases,
    # Order of MIC-DKFZ/nnUNet nnunet/dataset_conversion/Task017_BeyondCranialVaultAbdominalOrganSegmentation.py.
    classes={1: "spleen", 2: "right kidney", 3: "left kidney", 4: "gallbladder", 5: "esophagus", 6: "liver",
             7: "stomach", 8: "aorta", 9: "inferior vena cava", 10: "portal and splenic veins", 11: "pancreas",
             12: "right adrenal gland", 13: "left adrenal gland"},
)
