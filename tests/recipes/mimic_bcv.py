"""A tiny BTCV release: RawData/Training/{img,label} and RawData/Testing/img, with the release's wrong headers.

Every file carries a wrong direction instead of the true
:data:`mass_core.recipes.bcv.DIRECTION`, as the release's do; the mimic's
(:data:`WRONG_DIRECTION`) mirrors both left-right and front-back, so that a
test sees both axes put right. In the true geometry the liver (class 6) lies
at low X indices (patient right) and high Y indices (anterior); the spleen
(class 1) opposite.
"""

from __future__ import annotations

from pathlib import Path

from ct_blobs import write_case

# recipe name -> folder under the written root to point `root` at.
DATASETS = {"bcv": "RawData/Training"}
WRONG_DIRECTION = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
ORGANS = {6: (slice(2, 8), slice(12, 18), slice(3, 9)), 1: (slice(13, 17), slice(3, 7), slice(4, 8))}


def write(root: Path) -> None:
    """Two labeled training cases and one unlabeled test case."""
    training = root / "RawData" / "Training"
    for number in ("0001", "0002"):
        write_case(training / "img" / f"img{number}.nii.gz", training / "label" / f"label{number}.nii.gz", ORGANS,
                   direction=WRONG_DIRECTION)
    write_case(root / "RawData" / "Testing" / "img" / "img0061.nii.gz", None, ORGANS, direction=WRONG_DIRECTION)
