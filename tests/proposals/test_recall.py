from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mass_core.labels import IGNORE_LABEL
from mass_core.phantom import PhantomParams, make_phantom
from mass_core.proposals.generate import ProposalParams, generate_proposals
from mass_core.proposals.recall import best_dice, recall_table, summarize_recall
from mass_core.proposals.store import ProposalSet, ids_by_scale, write_store


def hand_case():
    """Ground truth with known best Dice values (worked out in the comments)."""
    label = np.zeros((6, 4, 4), np.uint8)
    label[0:2, 0:2, 0:2] = 1  # class 1: 8 voxels
    label[4, 0:2, 0:2] = 2  # class 2: 4 voxels ...
    label[5, 3, 3] = 2  # ... in two components: 4 + 1 voxels
    maps = np.zeros((2, 6, 4, 4), np.uint8)
    # Scale 0, label 1: 6 voxels of class 1 plus 2 outside: Dice 2*6/(8+8) = 0.75.
    maps[0, 0:2, 0:2, 0:2] = 1
    maps[0, 1, 1, 0:2] = 0
    maps[0, 2, 0, 0:2] = 1
    # Scale 1, label 1: 2 voxels of class 2: Dice 2*2/(5+2) = 4/7; for its
    # 4-voxel component 2*2/(4+2) = 2/3. Label 2: all of class 1 and 8 more:
    # Dice 2*8/(8+16) = 2/3, below scale 0's 0.75.
    maps[1, 4, 0, 0:2] = 1
    maps[1, 0:4, 0:2, 0:2] = 2
    return label, maps


def test_best_dice_by_hand():
    label, maps = hand_case()
    ids = [np.array([10]), np.array([20, 21])]
    rows = best_dice(label, maps, ids, (1.0, 1.0, 2.0), "c").set_index("class_id")
    assert rows.loc[1, "best_dice"] == pytest.approx(0.75) and rows.loc[1, "best_proposal_id"] == 10
    assert rows.loc[2, "best_dice"] == pytest.approx(4 / 7) and rows.loc[2, "best_proposal_id"] == 20
    assert rows.loc[2, "voxels"] == 5 and rows.loc[2, "volume_mm3"] == 10.0

    parts = best_dice(label, maps, ids, (1.0, 1.0, 2.0), "c", structures="component", min_structure_mm3=4.0)
    assert list(parts["class_id"]) == [1, 2]  # the 1-voxel component (2 mm^3) is left out
    assert parts["best_dice"].tolist() == pytest.approx([0.75, 2 / 3])

    summary = summarize_recall(rows.reset_index()).set_index("scope")
    overall = summary.loc["overall"]
    assert overall["n_structures"] == 2 and overall["class_id"] == -1
    assert overall["mean_best_dice"] == pytest.approx((0.75 + 4 / 7) / 2)
    assert overall["recall_dice50"] == 1.0 and overall["recall_dice70"] == 0.5


def test_ignored_voxels_are_no_structure_and_cost_no_proposal_dice():
    # 4 ignored voxels at x = 3, which hand_case's scale-1 label 2 (id 21) covers and its scale-0
    # label 1 (id 10) now covers too. Left out: id 21 holds class 1 and 4 more voxels, Dice
    # 2*8/(8+12) = 0.8, above id 10's 0.75. Counted, they would be a class of their own and
    # the best Dice of class 1 would be 2*8/(8+16) = 2/3 (id 10: 2*6/(8+12) = 0.6).
    label, maps = hand_case()
    label = label.astype(np.uint16)
    label[3, 0:2, 0:2] = IGNORE_LABEL
    maps[0, 3, 0:2, 0:2] = 1
    rows = best_dice(label, maps, [np.array([10]), np.array([20, 21])], (1.0, 1.0, 2.0), "c").set_index("class_id")
    assert list(rows.index) == [1, 2]
    assert rows.loc[1, "best_dice"] == pytest.approx(0.8) and rows.loc[1, "best_proposal_id"] == 21


def test_recall_table_over_a_dataset(tmp_path):
    label, maps = hand_case()
    for case in ("a", "b"):
        (tmp_path / "standardized" / case).mkdir(parents=True)
        proposals = ProposalSet.from_label_maps(case, (1.0, 1.0, 2.0), maps, ["x", "x"], [1, 2])
        write_store(tmp_path / "proposals" / case, proposals)
    np.save(tmp_path / "standardized" / "a" / "label.npy", label)  # b is unlabeled: left out
    summary = recall_table(tmp_path, ["a", "b"], tmp_path / "recall.parquet", tmp_path / "per.parquet")
    assert summary.equals(pd.read_parquet(tmp_path / "recall.parquet"))
    per = pd.read_parquet(tmp_path / "per.parquet")
    assert per["case_id"].tolist() == ["a", "a"]
    assert summary.set_index("scope").loc["overall", "recall_dice70"] == 0.5


def _phantom_case(index: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    # Normalised like the pipeline's CT branch: clip to [-991, 500] HU, z-score over the body.
    case = make_phantom(index, PhantomParams())
    hu = case.image_hu.astype(np.float32)
    clipped = np.clip(hu, -991, 500)
    body = hu > -500
    return ((clipped - clipped[body].mean()) / clipped[body].std()).astype(np.float32), case.label, case.spacing_mm


def test_phantom_organ_recall_at_default_parameters():
    frames = []
    for index in range(3):
        image, label, spacing = _phantom_case(index)
        proposals = generate_proposals(image, spacing, ProposalParams(), f"phantom_{index}")
        ids = ids_by_scale(proposals.table, len(proposals.sources))
        # Organ-sized: connected structures of 2 cm^3 or more (organs, the aorta,
        # single vertebrae; not lesions).
        frames.append(
            best_dice(label, proposals.label_maps, ids, spacing, f"phantom_{index}", structures="component",
                      min_structure_mm3=2000.0)
        )
    organs = pd.concat(frames)
    assert len(organs) >= 15
    assert (organs["best_dice"] >= 0.5).mean() >= 0.8
