"""A tiny TotalSegmentator release, CT (v2) and MR: sNNNN/{ct,mri}.nii.gz, one mask file per structure, meta.csv.

As in the release, every case folder holds a mask file for every structure
of its table, most of them empty. CT case s0001 lacks the aorta's file, and
its liver and aorta masks overlap (the later class in the table wins).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ct_blobs import body_and_label, write_volume
from mass_core.recipes.totalseg import CT_STRUCTURES, MR_STRUCTURES

DATASETS = {"totalseg_ct": "ct", "totalseg_mr": "mr"}
SIZE = (12, 12, 8)
# structure -> box of voxels; only these masks are non-empty.
MASKS = {
    "liver": (slice(2, 6), slice(2, 8), slice(2, 6)),
    "aorta": (slice(5, 7), slice(6, 8), slice(0, 8)),
    "spleen": (slice(8, 11), slice(3, 6), slice(3, 5)),
}


def _write_case(folder: Path, image_name: str, structures: tuple[str, ...], left_out: tuple[str, ...] = ()) -> None:
    hu, _ = body_and_label(SIZE, {})
    write_volume(hu, folder / image_name)
    for name in structures:
        if name in left_out:
            continue
        mask = np.zeros(SIZE, np.uint8)
        if name in MASKS:
            mask[MASKS[name]] = 1
        write_volume(mask, folder / "segmentations" / f"{name}.nii.gz")


def write(root: Path) -> None:
    """CT cases s0000 and s0001 (no aorta file) with meta.csv; MR case s0003."""
    ct, mr = root / DATASETS["totalseg_ct"], root / DATASETS["totalseg_mr"]
    _write_case(ct / "s0000", "ct.nii.gz", CT_STRUCTURES)
    _write_case(ct / "s0001", "ct.nii.gz", CT_STRUCTURES, left_out=("aorta",))
    (ct / "meta.csv").write_text("image_id;age;gender;institute;study_type;split\n"
                                 "s0000;61;m;A;ct abdomen;train\ns0001;70;f;B;ct thorax;test\n")
    _write_case(mr / "s0003", "mri.nii.gz", MR_STRUCTURES)
    (mr / "meta.csv").write_text("image_id;age;gender;institute;study_type;split\ns0003;55;f;A;mri abdomen;train\n")
