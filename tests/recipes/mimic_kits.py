"""A tiny KiTS19 release: ``case_XXXXX/imaging.nii.gz`` and ``segmentation.nii.gz``; test cases have no segmentation."""

from __future__ import annotations

from pathlib import Path

from ct_blobs import write_case

DATASETS = {"kits": "."}
_ORGANS = {1: (slice(3, 12), slice(3, 12), slice(2, 9)), 2: (slice(5, 8), slice(5, 8), slice(4, 6))}


def write(root: Path) -> None:
    """Four labeled training cases (0-3) and one test case (210) without segmentation."""
    for n in (0, 1, 2, 3, 210):
        folder = root / f"case_{n:05d}"
        write_case(folder / "imaging.nii.gz", folder / "segmentation.nii.gz" if n < 210 else None, _ORGANS)
