from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mass_core.evaluate.probe import ProbeParams, classification_metrics, fit_attention_probe, fit_linear_probe, run_probe

from .conftest import TINY_ENCODER


def blobs(n_per_class: int, n_classes: int, seed: int, separation: float = 4.0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(separation * c, 1.0, size=(n_per_class, 5)) for c in range(n_classes)])
    y = np.repeat(np.arange(n_classes), n_per_class)
    return x, y


def test_binary_auroc_equals_sklearn_on_separable_data():
    (tx, ty), (vx, vy), (sx, sy) = blobs(10, 2, 0), blobs(4, 2, 1), blobs(6, 2, 2)
    result = fit_linear_probe(tx, ty, vx, vy, sx, sy)
    assert result.auroc == pytest.approx(roc_auc_score(sy, result.probabilities[:, 1]))
    assert result.auroc == 1.0 and result.accuracy == 1.0 and result.balanced_accuracy == 1.0


def test_multiclass_auroc_is_ovr_macro():
    (tx, ty), (vx, vy), (sx, sy) = blobs(10, 3, 0, 1.0), blobs(4, 3, 1, 1.0), blobs(8, 3, 2, 1.0)
    result = fit_linear_probe(tx, ty, vx, vy, sx, sy)
    assert result.probabilities.shape == (24, 3)
    assert result.auroc == pytest.approx(roc_auc_score(sy, result.probabilities, multi_class="ovr", average="macro"))
    assert 0.5 < result.auroc < 1.0


def test_attention_probe_on_separable_tokens():
    rng = np.random.default_rng(0)

    def cases(labels):
        # Each case is 30 voxel features; a positive case is shifted along channel 0, a few voxels strongly.
        xs = []
        for y in labels:
            tokens = rng.normal(0, 1, size=(30, 4)).astype(np.float32)
            tokens[:, 0] += 2.0 * y
            tokens[:5, 0] += 6.0 * y
            xs.append(tokens)
        return xs, np.asarray(labels)

    (tx, ty), (vx, vy), (sx, sy) = cases([0, 1] * 6), cases([0, 1] * 2), cases([0, 1] * 3)
    result = fit_attention_probe(tx, ty, vx, vy, sx, sy, seed=0, epochs=100, grid=(1.0, 100.0))
    assert result.auroc == pytest.approx(roc_auc_score(sy, result.probabilities[:, 1]))
    assert result.auroc == 1.0


def test_single_class_test_split_has_nan_auroc():
    scores = classification_metrics(np.array([1, 1]), np.array([[0.2, 0.8], [0.6, 0.4]]), [0, 1])
    assert math.isnan(scores["auroc"]) and scores["accuracy"] == 0.5


def test_train_split_needs_two_classes():
    x, y = blobs(4, 1, 0)
    with pytest.raises(ValueError, match="two classes"):
        fit_linear_probe(x, y, x, y, x, y)


@pytest.mark.parametrize("pooling", ["avg", pytest.param("attention", marks=pytest.mark.slow)])
def test_run_probe_writes_metrics(tiny_dataset, tmp_path, pooling):
    metrics = run_probe(tiny_dataset, tmp_path / "out", dataset="tiny", method="scratch", seed=0, encoder_weights=None,
                        encoder_config=TINY_ENCODER, params=ProbeParams(pooling, "cpu"))
    stored = pd.read_parquet(tmp_path / "out" / "metrics.parquet")
    assert stored.loc[0, "auroc"] == metrics.loc[0, "auroc"] and 0 <= stored.loc[0, "auroc"] <= 1
    assert (stored.loc[0, "n_train"], stored.loc[0, "n_val"], stored.loc[0, "n_test"]) == (4, 2, 2)
    predictions = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    assert list(predictions["case_id"]) == ["case_06", "case_07"] and {"prob_0", "prob_1"} <= set(predictions.columns)


def test_run_probe_without_classification_labels(tiny_dataset, tmp_path):
    manifest = pd.read_parquet(tiny_dataset).assign(class_label=-1)
    manifest.to_parquet(tiny_dataset)
    metrics = run_probe(tiny_dataset, tmp_path / "out", dataset="tiny", method="scratch", seed=0, encoder_weights=None,
                        encoder_config=TINY_ENCODER, params=ProbeParams("avg", "cpu"))
    assert math.isnan(metrics.loc[0, "auroc"]) and "two classes" in metrics.loc[0, "note"]


def test_train_subset_keeps_a_share_of_every_class_in_the_seed_order():
    from mass_core.evaluate.cases import EvalCase
    from mass_core.evaluate.probe import train_subset

    empty = np.zeros((1, 1, 1), np.float32)
    cases = [EvalCase(f"c{i:02d}", empty, None, (1.0, 1.0, 1.0), int(i < 30), ()) for i in range(100)]
    subset = train_subset(cases, 0.05, seed=3)
    # 5 % of 30 positives rounds to 2 (1.5 halves up), of 70 negatives to 4 (3.5 halves up).
    assert sorted(sum(c.class_label == k for c in subset) for k in (0, 1)) == [2, 4]
    assert train_subset(cases, 0.05, seed=3) == subset
    assert {c.case_id for c in train_subset(cases, 0.05, seed=4)} != {c.case_id for c in subset}
    assert train_subset(cases, 1.0, seed=3) == cases
    # A class with one case keeps it.
    assert [c.case_id for c in train_subset(cases[29:31], 0.05, seed=0)] == ["c29", "c30"]
