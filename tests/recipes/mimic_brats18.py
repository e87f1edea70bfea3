"""A tiny BraTS 2018 training release: co-registered modalities and a 1/2/4 segmentation per subject.

Like the release, background is exactly 0 outside the skull-stripped brain.
Each modality shows a different part of it (FLAIR reaches further right, T2
further forward), so boxes found from one modality alone differ between them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

SUBJECTS = {"HGG": ("Brats18_2013_2_1", "Brats18_CBICA_AAB_1"), "LGG": ("Brats18_2013_0_1",)}
MODALITIES = ("flair", "t1", "t1ce", "t2", "seg")
SIZE_ZYX = (20, 26, 24)


def _volumes(seed: int) -> dict[str, np.ndarray]:
    z, y, x = np.mgrid[: SIZE_ZYX[0], : SIZE_ZYX[1], : SIZE_ZYX[2]]
    brain = ((z - 10) / 7) ** 2 + ((y - 13) / 8) ** 2 + ((x - 12) / 7) ** 2 <= 1
    rng = np.random.default_rng(seed)
    tissue = rng.normal(400, 20, SIZE_ZYX)
    seg = np.zeros(SIZE_ZYX, np.uint8)
    tumour = np.hypot(np.hypot(z - 10, y - 12), x - 10)
    seg[brain & (tumour <= 4)] = 2
    seg[brain & (tumour <= 2.5)] = 4
    seg[brain & (tumour <= 1.2)] = 1
    wider_x = brain | ((((z - 10) / 7) ** 2 + ((y - 13) / 8) ** 2 + ((x - 14) / 7) ** 2) <= 1)
    wider_y = brain | ((((z - 10) / 7) ** 2 + ((y - 16) / 8) ** 2 + ((x - 12) / 7) ** 2) <= 1)
    return {
        "flair": np.where(wider_x, tissue + 200 * (seg > 0), 0),
        "t1": np.where(brain, tissue - 100 * (seg > 0), 0),
        "t1ce": np.where(brain, tissue + 300 * (seg == 4), 0),
        "t2": np.where(wider_y, tissue * 1.5, 0),
        "seg": seg,
    }


def write(root: Path) -> None:
    """Write ``HGG/`` and ``LGG/`` subject folders under ``root`` (MICCAI_BraTS_2018_Data_Training)."""
    for seed, (grade, subject) in enumerate((grade, s) for grade, subjects in SUBJECTS.items() for s in subjects):
        folder = root / grade / subject
        folder.mkdir(parents=True)
        for name, array in _volumes(seed).items():
            # 1 mm voxels along ITK's default LPS axes, whose x and y run against RAS: the
            # crop is found after reorientation.
            image = sitk.GetImageFromArray(array.astype(np.uint8 if name == "seg" else np.int16))
            sitk.WriteImage(image, str(folder / f"{subject}_{name}.nii.gz"))
