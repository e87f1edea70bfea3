"""A tiny AMOS22 release: imagesTr/labelsTr, imagesVa/labelsVa, an unlabeled imagesTs and dataset.json.

Case numbers straddle the CT/MR boundary (499 CT, 500 MR).
"""

from __future__ import annotations

import json
from pathlib import Path

from ct_blobs import write_case

DATASETS = {"amos_ct": ".", "amos_mr": "."}
CT_CASES = ("amos_0001", "amos_0008", "amos_0499")
MR_CASES = ("amos_0500", "amos_0540")
_SPLITS = {"Tr": ("amos_0001", "amos_0499", "amos_0500"), "Va": ("amos_0008", "amos_0540")}
_ORGANS = {6: (slice(4, 10), slice(4, 10), slice(2, 8)), 13: (slice(12, 15), slice(12, 15), slice(5, 8))}


def write(root: Path) -> None:
    """Five labeled cases over the training and validation folders, one unlabeled test case."""
    for split, names in _SPLITS.items():
        for name in names:
            write_case(root / f"images{split}" / f"{name}.nii.gz", root / f"labels{split}" / f"{name}.nii.gz", _ORGANS)
    write_case(root / "imagesTs" / "amos_0002.nii.gz", None, _ORGANS)
    labels = {"0": "background", "1": "spleen", "6": "liver", "13": "duodenum", "15": "prostate/uterus"}
    (root / "dataset.json").write_text(json.dumps({"name": "AMOS", "labels": labels}))
