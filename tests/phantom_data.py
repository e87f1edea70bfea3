"""A small phantom dataset taken through the data stages in-process: generate,
standardize, manifest, proposals (what the workflow's first rules do, without
Snakemake), for tests that need real proposals of real-looking cases."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mass_core.datasets import list_cases
from mass_core.manifest import SplitParams, build_manifest, read_manifest
from mass_core.phantom import PhantomParams, write_dataset
from mass_core.proposals.generate import ProposalParams
from mass_core.proposals.stage import propose_case
from mass_core.standardize import StandardizeParams, run_standardize


@dataclass(frozen=True)
class PhantomData:
    manifest: Path
    proposals_root: Path


def phantom_with_proposals(root: Path, n_cases: int = 10, seed: int = 1) -> PhantomData:
    """``n_cases`` coarse phantoms (48x48x32 at 2.5x2.5x4 mm, standardized to 3 mm) with their proposal stores.

    Splits: 20 % val and 20 % test, the rest train.
    """
    raw = root / "raw"
    write_dataset(raw, n_cases, PhantomParams(shape=(48, 48, 32), spacing_mm=(2.5, 2.5, 4.0), seed=seed))
    standardized, proposals = root / "standardized", root / "proposals"
    metas = []
    for case in list_cases({"layout": "folder", "root": str(raw), "modality": "CT"}):
        run_standardize(case, standardized / case.case_id, StandardizeParams(spacing_mm=(3.0, 3.0, 3.0)), "fail")
        metas.append(standardized / case.case_id / "meta.json")
    manifest = root / "manifest.parquet"
    build_manifest(metas, manifest, root / "skipped.csv", SplitParams(0.2, 0.2, 0), raw / "classes.csv")
    params = ProposalParams(scales_mm3=(1.0, 4.0), min_volume_mm3=500.0)
    for row in read_manifest(manifest).itertuples():
        propose_case(row.image, proposals / row.case_id, row.case_id, params)
    return PhantomData(manifest, proposals)
