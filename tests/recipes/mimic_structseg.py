"""A tiny StructSeg 2019 release: HaN_OAR and Thoracic_OAR, one numbered folder per patient.

Each folder holds data.nii.gz and label.nii.gz; the archive's stray
``__MACOSX`` folder and a patient folder without label are there too.
"""

from __future__ import annotations

from pathlib import Path

from ct_blobs import write_case

DATASETS = {"structseg_head_oar": "HaN_OAR", "structseg_thoracic_oar": "Thoracic_OAR"}
HEAD_ORGANS = {1: (slice(8, 12), slice(8, 12), slice(3, 9)), 20: (slice(9, 11), slice(3, 6), slice(0, 12)),
               22: (slice(12, 16), slice(14, 18), slice(2, 4))}
THORACIC_ORGANS = {1: (slice(12, 18), slice(4, 16), slice(2, 10)), 2: (slice(2, 8), slice(4, 16), slice(2, 10)),
                   5: (slice(8, 12), slice(10, 15), slice(3, 8))}


def write(root: Path) -> None:
    """Head-and-neck patients 1 and 10 (10 unlabeled), thoracic patients 3 and 7."""
    head, thorax = root / DATASETS["structseg_head_oar"], root / DATASETS["structseg_thoracic_oar"]
    write_case(head / "1" / "data.nii.gz", head / "1" / "label.nii.gz", HEAD_ORGANS, spacing=(1.0, 1.0, 3.0))
    write_case(head / "10" / "data.nii.gz", None, HEAD_ORGANS, spacing=(1.0, 1.0, 3.0))
    for patient in ("3", "7"):
        write_case(thorax / patient / "data.nii.gz", thorax / patient / "label.nii.gz", THORACIC_ORGANS)
    (head / "__MACOSX").mkdir()
