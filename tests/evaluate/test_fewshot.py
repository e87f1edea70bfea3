from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mass_core.evaluate.fewshot import FewshotParams, load_incontext_segmenter, reference_tokens, run_fewshot, select_references
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
    assert list(metrics.columns[:6]) == ["dataset", "method", "k", "seed", "case_id", "class_id"]
    assert len(metrics) == 2 * 2 and set(metrics["class_id"]) == {1, 2} and (metrics["k"] == 2).all()
    assert all(len(refs) == 2 for refs in summary["references"].values())
    # case_06 has no class 2: not counted in Dice.
    assert np.isnan(metrics.set_index(["case_id", "class_id"]).loc[("case_06", 2), "dice"])


def test_encoder_file_is_not_an_incontext_model(tmp_path):
    save_encoder(tmp_path / "encoder.pt", load_incontext_segmenter(save_mass_checkpoint(tmp_path / "final.pt")).encoder, "mass", 0)
    with pytest.raises(ValueError, match="not a MASS training checkpoint"):
        load_incontext_segmenter(tmp_path / "encoder.pt")
