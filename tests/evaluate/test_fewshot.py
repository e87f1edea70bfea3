from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mass_core.evaluate.aggregate import aggregate
from mass_core.evaluate.fewshot import (
    FewshotParams,
    incontext_metrics,
    load_incontext_segmenter,
    reference_tokens,
    run_fewshot,
    select_references,
    swap_order,
)
from mass_core.labels import IGNORE_LABEL
from mass_core.models.incontext import TaskTokens
from mass_core.pretrain.checkpoint import save_encoder

from .conftest import TINY_INCONTEXT, save_mass_checkpoint, synthetic_case

PARAMS = FewshotParams(crop=(16, 16, 16), roi=(16, 16, 16), device="cpu")


def test_references_contain_their_class_and_are_nested():
    cases = {"a": (1,), "b": (1, 2), "c": (1,), "d": (1, 2), "e": (2,)}
    small, large = select_references(cases, [1, 2], 1, seed=0), select_references(cases, [1, 2], 3, seed=0)
    for class_id in (1, 2):
        assert all(class_id in cases[cid] for cid in large[class_id])
        assert large[class_id][:1] == small[class_id]
    assert len(large[1]) == 3 and len(large[2]) == 3
    assert select_references(cases, [3], 2, seed=0) == {3: []}


def test_tokens_are_averaged_over_references(tmp_path):
    model = load_incontext_segmenter(save_mass_checkpoint(tmp_path / "final.pt"))
    refs = {f"r{s}": synthetic_case(s) for s in (1, 3)}
    both = reference_tokens(model, refs, {1: ["r1", "r3"], 2: ["r1"]}, (16, 16, 16), torch.device("cpu"))
    assert both.num_masks == 2 and both.tokens[0].shape[:3] == (1, 2, 1 + TINY_INCONTEXT.learned_tokens)
    one = [reference_tokens(model, refs, {1: [r]}, (16, 16, 16), torch.device("cpu")) for r in ("r1", "r3")]
    torch.testing.assert_close(both.tokens[0][:, :1], (one[0].tokens[0] + one[1].tokens[0]) / 2)


def test_run_fewshot_writes_metrics(tiny_dataset, tmp_path):
    summary = run_fewshot(tiny_dataset, save_mass_checkpoint(tmp_path / "final.pt"), tmp_path / "out", dataset="tiny",
                          method="mass", k=2, seed=0, params=PARAMS, threads=1)
    metrics = pd.read_parquet(tmp_path / "out" / "metrics.parquet")
    assert list(metrics.columns[:7]) == ["dataset", "method", "k", "seed", "references", "case_id", "class_id"]
    # 2 test cases x 2 classes, with own and with swapped references.
    assert len(metrics) == 2 * 2 * 2 and set(metrics["class_id"]) == {1, 2} and (metrics["k"] == 2).all()
    assert metrics.groupby("references").size().to_dict() == {"own": 4, "swapped": 4}
    assert all(len(refs) == 2 for refs in summary["references"].values())
    # case_06 has no class 2: not counted in Dice.
    own = metrics[metrics["references"] == "own"].set_index(["case_id", "class_id"])
    assert np.isnan(own.loc[("case_06", 2), "dice"])


class _IgnoresReference(torch.nn.Module):
    """Segments whatever is bright in the query, whatever the reference marks."""

    def encode_task(self, reference: torch.Tensor, ref_masks: torch.Tensor) -> TaskTokens:
        return TaskTokens([ref_masks.flatten(2)[:, :, None]])

    def segment(self, query: torch.Tensor, task: TaskTokens) -> torch.Tensor:
        return (10 * query).repeat(1, task.num_masks, 1, 1, 1)


class _CopiesReference(_IgnoresReference):
    """Pastes the reference mask into the query (right only where the query is the reference)."""

    def segment(self, query: torch.Tensor, task: TaskTokens) -> torch.Tensor:
        masks = task.tokens[0][:, :, 0].reshape(task.tokens[0].shape[0], task.num_masks, *query.shape[2:])
        return 20 * (masks - 0.5).repeat(query.shape[0], 1, 1, 1, 1)


def _two_structures() -> tuple[np.ndarray, np.ndarray]:
    label = np.zeros((16, 16, 16), np.uint8)
    label[2:7, 2:7, 2:7] = 1
    label[9:14, 8:14, 9:14] = 2
    image = np.where(label > 0, 1.0, -1.0).astype(np.float32)
    return image, label


# Ignoring the reference, both classes get "everything bright" (125 + 150 voxels): Dice 250 / 400 and 300 / 425.
@pytest.mark.parametrize("model, own, gap", [(_IgnoresReference(), (250 / 400 + 300 / 425) / 2, 0.0), (_CopiesReference(), 1.0, 1.0)])
def test_swap_control_separates_models_that_read_their_reference(model, own, gap):
    image, label = _two_structures()
    # The query is the reference itself, and the reference crop is the whole volume.
    tokens = reference_tokens(model, {"q": (image, label)}, {1: ["q"], 2: ["q"]}, (16, 16, 16), torch.device("cpu"))
    params = FewshotParams(crop=(16, 16, 16), roi=(16, 16, 16), device="cpu")
    rows = incontext_metrics(model, image, label, (1.0, 1.0, 1.0), tokens, [1, 2], params, torch.device("cpu"), hd95=False)
    dice = rows.groupby("references")["dice"].mean()
    assert dice["own"] == pytest.approx(own, abs=1e-6)
    assert dice["own"] - dice["swapped"] == pytest.approx(gap, abs=1e-6)


def test_predictions_inside_ignored_voxels_change_no_few_shot_score():
    # The bright-everything model also segments a bright block of ignored voxels (64 voxels);
    # counted, they would lower both Dice values. Left out, the scores of the two structures remain.
    image, label = _two_structures()
    label = label.astype(np.uint16)
    label[12:16, 0:4, 0:4] = IGNORE_LABEL
    image[12:16, 0:4, 0:4] = 1.0
    model = _IgnoresReference()
    tokens = reference_tokens(model, {"q": (image, label)}, {1: ["q"], 2: ["q"]}, (16, 16, 16), torch.device("cpu"))
    params = FewshotParams(crop=(16, 16, 16), roi=(16, 16, 16), device="cpu")
    rows = incontext_metrics(model, image, label, (1.0, 1.0, 1.0), tokens, [1, 2], params, torch.device("cpu"), hd95=False)
    own = rows[rows["references"] == "own"].set_index("class_id")
    assert own.loc[1, "dice"] == pytest.approx(250 / 400) and own.loc[2, "dice"] == pytest.approx(300 / 425)
    assert list(own["pred_voxels"]) == [275, 275]


def test_swap_order_is_a_derangement():
    for n in (2, 3, 7):
        order = swap_order(n)
        assert sorted(order) == list(range(n)) and all(i != j for i, j in enumerate(order))
    with pytest.raises(ValueError, match="at least two"):
        swap_order(1)


def test_swap_table_reports_the_gap_with_its_interval(tmp_path):
    rows = []
    for seed in (0, 1):
        for case in range(6):
            for class_id in (1, 2):
                rows += [{"dataset": "d", "method": "mass", "k": 1, "seed": seed, "references": "own", "case_id": f"c{case}",
                          "class_id": class_id, "dice": 0.8, "hd95_mm": 1.0, "truth_voxels": 10, "pred_voxels": 10},
                         {"dataset": "d", "method": "mass", "k": 1, "seed": seed, "references": "swapped", "case_id": f"c{case}",
                          "class_id": class_id, "dice": 0.1 + 0.02 * case, "hd95_mm": 9.0, "truth_voxels": 10, "pred_voxels": 10}]
    pd.DataFrame(rows).to_parquet(tmp_path / "few.parquet")
    tables = aggregate([], [tmp_path / "few.parquet"], [], tmp_path / "tables", ["mass"])
    swap = tables["fewshot_swap"].iloc[0]
    # Swapped Dice 0.10..0.20 over cases, mean 0.15: the gap is 0.65 and the interval lies within [0.6, 0.7].
    assert swap["dice_own"] == pytest.approx(0.8) and swap["dice_swapped"] == pytest.approx(0.15)
    assert swap["diff_mean"] == pytest.approx(0.65) and 0.6 <= swap["ci_low"] < 0.65 < swap["ci_high"] <= 0.7
    assert (swap["n_seeds"], swap["n_cases"]) == (2, 6)
    # The few-shot Dice table keeps the own-reference rows only.
    assert tables["fewshot_dice"].iloc[0]["dice_mean"] == pytest.approx(0.8)
    assert "+65.0" in (tmp_path / "tables" / "fewshot_swap.md").read_text()


def test_encoder_file_is_not_an_incontext_model(tmp_path):
    save_encoder(tmp_path / "encoder.pt", load_incontext_segmenter(save_mass_checkpoint(tmp_path / "final.pt")).encoder, "mass", 0)
    with pytest.raises(ValueError, match="not a MASS training checkpoint"):
        load_incontext_segmenter(tmp_path / "encoder.pt")


def test_fixed_references_come_first_then_the_seeded_order():
    cases = {"a": (1,), "b": (1, 2), "c": (1,), "d": (1, 2), "e": (2,)}
    seeded = select_references(cases, [1, 2], 3, seed=0)
    fixed = select_references(cases, [1, 2], 3, seed=0, fixed={"2": ["e"], "all": ["c"]})
    # Class 2 has its own entry; class 1 takes the "all" entry.
    assert fixed[2][0] == "e" and fixed[2][1:] == [cid for cid in seeded[2] if cid != "e"][:2]
    assert fixed[1][0] == "c" and fixed[1][1:] == [cid for cid in seeded[1] if cid != "c"][:2]
    # With k = 1 the fixed reference is the whole choice, whatever the seed.
    assert {seed: select_references(cases, [1, 2], 1, seed, {"1": ["a"], "2": ["b"]}) for seed in (0, 1, 2)} == \
        {seed: {1: ["a"], 2: ["b"]} for seed in (0, 1, 2)}
    with pytest.raises(ValueError, match="fixed reference 'zz' of class 1 is not a labeled train case"):
        select_references(cases, [1], 1, 0, {"all": ["zz"]})
    with pytest.raises(ValueError, match="fixed reference 'a' does not contain class 2"):
        select_references(cases, [2], 1, 0, {"2": ["a"]})
