from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mass_core.evaluate.finetune import FinetuneParams, learning_rate_factor, run_finetune
from mass_core.evaluate.subsets import Budget
from mass_core.models.encoder import ResidualEncoder
from mass_core.pretrain.checkpoint import save_encoder

from .conftest import TINY_ENCODER, save_mass_checkpoint, write_dataset

PARAMS = FinetuneParams(steps=4, crop=(16, 16, 16), batch=2, val_every=2, roi=(16, 16, 16), device="cpu")


def test_params_from_config():
    params = FinetuneParams.from_config({"steps": 10, "crop": [16, 16, 16]})
    assert params.crop == (16, 16, 16) and params.steps == 10
    with pytest.raises(ValueError, match="unknown keys"):
        FinetuneParams.from_config({"step": 10})
    with pytest.raises(ValueError, match="overlap"):
        FinetuneParams(overlap=1.0)


def test_learning_rate_warms_up_linearly_then_decays():
    params = FinetuneParams(steps=100, warmup_steps=10)
    assert learning_rate_factor(0, params) == pytest.approx(0.1)
    assert learning_rate_factor(4, params) == pytest.approx(0.5 * 0.96 ** 0.9)
    assert learning_rate_factor(9, params) == pytest.approx(0.91 ** 0.9)
    factors = [learning_rate_factor(step, params) for step in range(100)]
    assert factors.index(max(factors)) == 9 and all(a > b for a, b in zip(factors[9:], factors[10:]))
    assert learning_rate_factor(0, FinetuneParams(steps=100)) == 1.0
    with pytest.raises(ValueError, match="warmup_steps"):
        FinetuneParams(steps=10, warmup_steps=10)


@pytest.mark.slow
@pytest.mark.parametrize("pretrained", [False, True])
def test_finetune_on_three_tiny_cases_writes_metrics(tmp_path, pretrained):
    manifest = write_dataset(tmp_path / "data", {"train": [0, 1], "val": [2], "test": [3]})
    weights = None
    if pretrained:
        weights = tmp_path / "encoder.pt"
        save_encoder(weights, ResidualEncoder(TINY_ENCODER), "mim", step=1)
    summary = run_finetune(manifest, tmp_path / "out", dataset="tiny", method="mim" if pretrained else "scratch",
                           budget=Budget("fraction", 0.5), seed=0, subset_seed=0, encoder_weights=weights,
                           encoder_config=TINY_ENCODER, params=PARAMS, threads=1)
    metrics = pd.read_parquet(tmp_path / "out" / "metrics.parquet")
    assert list(metrics["case_id"]) == ["case_03", "case_03"] and list(metrics["class_id"]) == [1, 2]
    # Half of two train cases: one labeled case, a realised share of 0.5.
    assert set(zip(metrics["budget"], metrics["label_cases"], metrics["fraction"])) == {("fraction_0.5", 1, 0.5)}
    assert (summary["budget"], summary["label_cases"], summary["fraction"]) == ("fraction_0.5", 1, 0.5)
    assert metrics["dice"].between(0, 1).all() and (metrics["hd95_mm"] >= 0).all()
    stored = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert stored["train_cases"] == summary["train_cases"] and len(stored["train_cases"]) == 1
    assert [h["step"] for h in stored["history"]] == [2, 4] and stored["selected_step"] in (2, 4)
    assert stored["test_cases"] == ["case_03"] and "case_03" not in stored["train_cases"] + stored["val_cases"]
    with np.load(tmp_path / "out" / "predictions.npz") as predictions:
        assert predictions["case_03"].shape == (24, 24, 20)


def test_finetune_rejects_more_cases_than_the_train_split(tmp_path):
    manifest = write_dataset(tmp_path / "data", {"train": [0, 1], "val": [2], "test": [3]})
    with pytest.raises(ValueError, match="cases_3: 3 cases asked for, but the train split has 2"):
        run_finetune(manifest, tmp_path / "out", dataset="tiny", method="scratch", budget=Budget("cases", 3), seed=0,
                     subset_seed=0, encoder_weights=None, encoder_config=TINY_ENCODER, params=PARAMS, threads=1)


@pytest.mark.slow
def test_mass_ft_finetunes_the_incontext_model_from_its_checkpoint(tmp_path):
    manifest = write_dataset(tmp_path / "data", {"train": [3, 1], "val": [2], "test": [5]})
    checkpoint = save_mass_checkpoint(tmp_path / "final.pt")
    summary = run_finetune(manifest, tmp_path / "out", dataset="tiny", method="mass", budget=Budget("cases", 1), seed=0,
                           subset_seed=0, encoder_weights=checkpoint, encoder_config=TINY_ENCODER, params=PARAMS, threads=1,
                           whole_model=True)
    assert summary["network"].startswith("in-context model with class priors")
    metrics = pd.read_parquet(tmp_path / "out" / "metrics.parquet")
    assert list(metrics["class_id"]) == [1, 2] and metrics["dice"].between(0, 1).all()
    with pytest.raises(ValueError, match="MASS training checkpoint"):
        run_finetune(manifest, tmp_path / "other", dataset="tiny", method="mass", budget=Budget("cases", 1), seed=0, subset_seed=0,
                     encoder_weights=None, encoder_config=TINY_ENCODER, params=PARAMS, threads=1, whole_model=True)
