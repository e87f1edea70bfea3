from __future__ import annotations

import json
import os
import signal

import numpy as np
import pandas as pd
import pytest
import torch
from monai.losses import DiceCELoss

from mass_core.evaluate.finetune import IGNORE_INDEX, TRAINING_DIR, FinetuneParams, FinetuneStopped, MaskedDiceCELoss, learning_rate_factor, run_finetune, target_lookup
from mass_core.evaluate.subsets import Budget
from mass_core.labels import IGNORE_LABEL
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
    assert [h["step"] for h in stored["history"]] == [2, 4]
    # The kept weights are those of the best val Dice; a tie goes to the later step.
    best_dice = max(h["val_dice"] for h in stored["history"])
    assert stored["selected_step"] == max(h["step"] for h in stored["history"] if h["val_dice"] == best_dice)
    assert stored["test_cases"] == ["case_03"] and "case_03" not in stored["train_cases"] + stored["val_cases"]
    with np.load(tmp_path / "out" / "predictions.npz") as predictions:
        assert predictions["case_03"].shape == (24, 24, 20)


def test_ignored_voxels_add_nothing_to_the_loss():
    # Reference: MONAI's own DiceCE loss on the non-ignored voxels alone (gathered into one
    # batch element, which batch=True Dice and the voxel-mean cross-entropy both allow).
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, 4, requires_grad=True)
    target = torch.randint(0, 3, (2, 1, 4, 4, 4))
    reference = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)
    assert MaskedDiceCELoss()(logits, target).item() == pytest.approx(reference(logits, target).item(), rel=1e-6)
    masked = target.clone()
    masked[:, :, :2] = IGNORE_INDEX
    keep = masked[:, 0] != IGNORE_INDEX
    kept_logits = logits.permute(1, 0, 2, 3, 4)[:, keep].reshape(1, 3, -1, 1, 1)
    kept_target = target[:, 0][keep].reshape(1, 1, -1, 1, 1)
    loss = MaskedDiceCELoss()(logits, masked)
    expected = reference(kept_logits, kept_target).item()
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert abs(reference(logits, target).item() - expected) > 0.01  # the ignored voxels would have counted
    loss.backward()
    assert logits.grad[:, :, :2].abs().max() == 0 and logits.grad[:, :, 2:].abs().max() > 0
    # A crop wholly inside ignored voxels gives no loss rather than NaN.
    assert MaskedDiceCELoss()(logits, torch.full_like(target, IGNORE_INDEX)).item() == 0.0


def test_training_targets_of_ignored_voxels():
    label = np.array([0, 3, 7, IGNORE_LABEL, 5], np.uint16)
    assert target_lookup([3, 7])[label].tolist() == [0, 1, 2, IGNORE_INDEX, 0]


@pytest.mark.slow
def test_finetune_with_ignored_voxels_trains_and_scores_the_rest(tmp_path):
    manifest = write_dataset(tmp_path / "data", {"train": [0, 1], "val": [2], "test": [3]}, ignored_slices=4)
    summary = run_finetune(manifest, tmp_path / "out", dataset="tiny", method="scratch", budget=Budget("cases", 2), seed=0,
                           subset_seed=0, encoder_weights=None, encoder_config=TINY_ENCODER, params=PARAMS, threads=1)
    metrics = pd.read_parquet(tmp_path / "out" / "metrics.parquet").set_index("class_id")
    truth = np.load(tmp_path / "data" / "standardized" / "case_03" / "label.npy")
    assert summary["classes"] == [1, 2] and list(metrics.index) == [1, 2]
    assert [metrics.loc[c, "truth_voxels"] for c in (1, 2)] == [np.count_nonzero(truth == c) for c in (1, 2)]
    assert all(np.isfinite(h["loss"]) for h in summary["history"])


@pytest.mark.parametrize("train, reason", [([0, 1], "label budget cases_3: 3 cases asked for, but the train split has 2"),
                                           ([], "the training split has no cases")])
def test_finetune_rejects_a_train_split_smaller_than_the_budget_naming_the_manifest(tmp_path, train, reason):
    manifest = write_dataset(tmp_path / "data", {"train": train, "val": [2], "test": [3]})
    with pytest.raises(ValueError) as caught:
        run_finetune(manifest, tmp_path / "out", dataset="tiny", method="scratch", budget=Budget("cases", 3), seed=0,
                     subset_seed=0, encoder_weights=None, encoder_config=TINY_ENCODER, params=PARAMS, threads=1)
    assert str(caught.value) == f"{manifest}: {reason}"


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


@pytest.mark.slow
def test_finetuning_stopped_by_sigterm_resumes_to_the_uninterrupted_results(tmp_path, monkeypatch):
    manifest = write_dataset(tmp_path / "data", {"train": [0, 1], "val": [2], "test": [3]})
    params = FinetuneParams(steps=6, crop=(16, 16, 16), batch=2, val_every=2, roi=(16, 16, 16), device="cpu", checkpoint_every=4)

    def finetune(out):
        return run_finetune(manifest, out, dataset="tiny", method="scratch", budget=Budget("fraction", 1.0), seed=0, subset_seed=0,
                            encoder_weights=None, encoder_config=TINY_ENCODER, params=params, threads=1)

    reference = finetune(tmp_path / "reference")
    forward, calls = MaskedDiceCELoss.forward, []

    def terminated_in_step_3(self, logits, target):
        # Like a scheduler's time limit: SIGTERM arrives in step 3, after the step-2 selection and before any checkpoint.
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return forward(self, logits, target)

    monkeypatch.setattr(MaskedDiceCELoss, "forward", terminated_in_step_3)
    with pytest.raises(FinetuneStopped, match="after step 3 of 6") as stopped:
        finetune(tmp_path / "out")
    assert stopped.value.exit_code == 75 and (tmp_path / "out" / TRAINING_DIR / "latest.pt").is_file()
    assert not (tmp_path / "out" / "metrics.parquet").exists()
    monkeypatch.setattr(MaskedDiceCELoss, "forward", forward)
    resumed = finetune(tmp_path / "out")

    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / "metrics.parquet"), pd.read_parquet(tmp_path / "reference" / "metrics.parquet"))
    timing = {"train_seconds", "total_seconds", "cpu_seconds"}
    assert {k: v for k, v in resumed.items() if k not in timing} == {k: v for k, v in reference.items() if k not in timing}
    assert [row["step"] for row in resumed["history"]] == [2, 4, 6]
