"""The propose stage: class-agnostic 3D mask proposals by supervoxel clustering.

Per standardized case, :func:`propose_case` segments the image at several
scales (3D Felzenszwalb-Huttenlocher by default, or scikit-image per slice
linked in 3D), filters and deduplicates the segments, and stores them as one
label map per scale plus a proposal table (:class:`ProposalStore` counts
and paints the proposals of training crops from the stored runs).
:func:`recall_table` measures how well proposals cover the ground truth of
a labeled dataset. See
``docs/proposals.md``.
"""

from __future__ import annotations

from mass_core.proposals.exchange import export_mass_layout, import_mass_layout, import_masks
from mass_core.proposals.generate import ProposalParams, generate_proposals
from mass_core.proposals.recall import RecallParams, recall_table
from mass_core.proposals.stage import propose_case
from mass_core.proposals.store import CropRuns, ProposalSet, ProposalStore

__all__ = [
    "CropRuns",
    "ProposalParams",
    "ProposalSet",
    "ProposalStore",
    "export_mass_layout",
    "generate_proposals",
    "import_mass_layout",
    "import_masks",
    "propose_case",
    "RecallParams",
    "recall_table",
]
