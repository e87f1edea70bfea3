"""A tiny LiTS release: volume-N.nii / segmentation-N.nii over two training batch folders, plus test volumes.

Volumes 28 and 34 carry :data:`BROKEN_SPACING` (the release's are broken),
the others :data:`SPACING`; every volume has :data:`SIZE` voxels.
"""

from __future__ import annotations

from pathlib import Path

from ct_blobs import write_case

DATASETS = {"lits": "."}
SIZE = (20, 20, 12)
SPACING = (0.8, 0.8, 2.0)
BROKEN_SPACING = (1.0, 1.0, 1.0)
_BATCHES = {"Training Batch 1": (0, 27), "Training Batch 2": (28, 34, 35)}
_ORGANS = {1: (slice(3, 12), slice(3, 12), slice(2, 9)), 2: (slice(5, 8), slice(5, 8), slice(4, 6))}


def write(root: Path) -> None:
    """Five labeled volumes in the batch folders and one unlabeled test volume."""
    for batch, numbers in _BATCHES.items():
        for n in numbers:
            spacing = BROKEN_SPACING if n in (28, 34) else SPACING
            write_case(root / batch / f"volume-{n}.nii", root / batch / f"segmentation-{n}.nii", _ORGANS, SIZE,
                       spacing=spacing)
    write_case(root / "Testing" / "test-volume-0.nii", None, _ORGANS, SIZE, spacing=SPACING)
