"""LiTS (Liver Tumor Segmentation Challenge), abdominal CT.

The release (https://competitions.codalab.org/competitions/17094, also
mirrored on Kaggle) holds ``volume-N.nii`` with ``segmentation-N.nii``
(N = 0-130), in one folder or split over ``Training Batch 1`` and
``Training Batch 2``; the unlabeled ``test-volume-N.nii`` are not read.
Point ``root`` at the folder holding them (or the batch folders). Files may
also be gzipped (``.nii.gz``). Labels: 1 liver, 2 tumour.

Volumes 28 and 34 carry a broken voxel spacing; the official MASS code
replaces it by (0.7, 0.7, 2.5) mm. This recipe does the same, on the image
and the label alike (the official code fixes the image only, which leaves
the label on another grid).
"""

from __future__ import annotations

import re
from pathlib import Path

from mass_core.datasets import CaseSource, Listing
from mass_core.recipes.recipe import Recipe

__all__ = ["FIXED_SPACING", "RECIPE", "cases"]

# Volume number -> spacing (X, Y, Z) in mm replacing the file's.
FIXED_SPACING = {28: (0.7, 0.7, 2.5), 34: (0.7, 0.7, 2.5)}
_VOLUME = re.compile(r"volume-(\d+)\.nii(\.gz)?")


def cases(root: Path) -> Listing:
    """One case per ``volume-N.nii[.gz]`` anywhere under ``root``, labeled by ``segmentation-N`` beside it."""
    found = []
    for image in sorted(root.rglob("volume-*")):
        match = _VOLUME.fullmatch(image.name)
        if match is None:
            continue
        number = int(match.group(1))
        label = next((path for path in (image.with_name(f"segmentation-{number}.nii{ext}") for ext in ("", ".gz"))
                      if path.is_file()), None)
        found.append(CaseSource(f"volume-{number}", image, label, "CT", spacing=FIXED_SPACING.get(number)))
    return Listing(found)


RECIPE = Recipe(
    layout="volume-N.nii with segmentation-N.nii, in root or its Training Batch folders",
    cases=cases,
    classes={1: "liver", 2: "tumor"},  # MIC-DKFZ/nnUNet Task029_LiverTumorSegmentationChallenge.py
)
