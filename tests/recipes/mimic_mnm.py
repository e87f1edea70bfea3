"""A tiny M&Ms OpenDataset: 4D cines labeled at two frames, and the ED/ES table.

Three labeled subjects (one per phase folder), one of them with ES before ED,
and an unlabeled training subject that the recipe must not use. Each frame's
image holds its frame number in a corner voxel, so a test can tell frames apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

# subject -> (phase folder, ED, ES); ED/ES count frames from 0, as the release's table does.
SUBJECTS = {
    "A0S9V9": ("Training/Labeled", 0, 3),
    "A1D0Q7": ("Validation", 4, 1),
    "A1E9Q1": ("Testing", 0, 2),
    "A2C0I1": ("Training/Unlabeled", 0, 2),
}
FRAMES = 5
SIZE_ZYX = (6, 20, 20)
SPACING = (1.6, 1.6, 8.0)
TABLE = "211230_M&Ms_Dataset_information_diagnosis_opendataset.csv"


def _volume(frames_zyx: list[np.ndarray]) -> sitk.Image:
    image = sitk.JoinSeries([sitk.GetImageFromArray(frame) for frame in frames_zyx])
    image.SetSpacing((*SPACING, 1.0))
    return image


def _heart(frame: int) -> np.ndarray:
    """Labels 1 (LV), 2 (myocardium around it), 3 (RV beside it); the LV shrinks over the cycle."""
    z, y, x = np.mgrid[: SIZE_ZYX[0], : SIZE_ZYX[1], : SIZE_ZYX[2]]
    radius = 4.0 - 0.4 * frame
    distance = np.hypot(y - 9, x - 8)
    label = np.zeros(SIZE_ZYX, np.uint8)
    inside = (z >= 1) & (z <= 4)
    label[inside & (distance <= radius + 1.5)] = 2
    label[inside & (distance <= radius)] = 1
    label[inside & (np.hypot(y - 9, x - 15) <= 2.5) & (label == 0)] = 3
    return label


def write(root: Path) -> None:
    """Write the release's folders and table under ``root`` (the OpenDataset folder)."""
    rows = ["External code,VendorName,Vendor,Centre,ED,ES,Pathology"]
    for subject, (phase, ed, es) in SUBJECTS.items():
        folder = root / phase / subject
        folder.mkdir(parents=True)
        images, labels = [], []
        for frame in range(FRAMES):
            heart = _heart(frame)
            image = np.where(heart == 2, 300, np.where(heart > 0, 600, 100)).astype(np.int16)
            image[0, 0, 0] = frame
            images.append(image)
            labels.append(heart if frame in (ed, es) and phase != "Training/Unlabeled" else np.zeros_like(heart))
        sitk.WriteImage(_volume(images), str(folder / f"{subject}_sa.nii.gz"))
        if phase != "Training/Unlabeled":
            sitk.WriteImage(_volume(labels), str(folder / f"{subject}_sa_gt.nii.gz"))
        rows.append(f"{subject},Siemens,A,1,{ed},{es},NOR")
    # The release's table starts with an unnamed index column.
    (root / TABLE).write_text("\n".join(f"{index - 1 if index else ''},{row}" for index, row in enumerate(rows)) + "\n")
