"""Frozen-encoder classification (the ``linear_probe`` job).

The pretrained encoder is frozen; each case's deepest feature map
``(C, x, y, z)`` is computed once over the whole standardized volume and
pooled into one vector:

- ``avg``: the mean over voxels, then a linear classifier (scikit-learn's
  multinomial logistic regression on standardized features);
- ``attention``: gated attention pooling (Ilse et al., 2018) learned jointly
  with a linear classifier on the frozen voxel features (a few hundred
  parameters besides the classifier; still a probe of the frozen features).

Model selection: the regularisation strength is chosen on the val split
(lowest log-loss, which unlike AUROC is defined even when val holds one
class); the head is then refit on train + val with it. The test split is
used once, for AUROC (one-vs-rest macro for more than two classes, via
:func:`sklearn.metrics.roc_auc_score`), accuracy and balanced accuracy.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, log_loss, roc_auc_score
from torch import nn

from mass_core.config_section import from_section
from mass_core.evaluate.cases import EvalCase, load_split
from mass_core.evaluate.job import start_job
from mass_core.evaluate.subsets import fraction_count, seeded_order
from mass_core.models.encoder import EncoderConfig, ResidualEncoder
from mass_core.pretrain.checkpoint import load_encoder

__all__ = [
    "DEVICES",
    "POOLINGS",
    "PROBE_FILES",
    "REGULARIZATION_GRID",
    "ProbeParams",
    "ProbeResult",
    "classification_metrics",
    "deepest_features",
    "fit_attention_probe",
    "fit_linear_probe",
    "run_probe",
]

POOLINGS = ("avg", "attention")
DEVICES = ("auto", "cuda", "cpu")


@dataclass(frozen=True)
class ProbeParams:
    """Settings of the frozen-encoder classification (config key ``evaluation.probe``).

    Args:
        pooling: ``"avg"`` (mean of the deepest features, logistic regression)
            or ``"attention"`` (gated attention learned with the linear head).
        device: ``auto`` (CUDA when available), ``cuda`` or ``cpu``.
        train_fraction: share of the labeled train cases the probe learns from,
            per class (at least one each), drawn in the run seed's order (the
            MASS paper's RSNA-ICH result uses 5 %).
    """

    pooling: str = "avg"
    device: str = "auto"
    train_fraction: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"train_fraction must be in (0, 1], got {self.train_fraction}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> ProbeParams:
        """Build from the config's ``evaluation.probe`` section (unknown keys are an error)."""
        return from_section(cls, section, "evaluation.probe")
def train_subset(cases: Sequence[EvalCase], fraction: float, seed: int) -> list[EvalCase]:
    """``fraction`` of the cases of every class (at least one), the first of the seeded order; all when 1."""
    if fraction >= 1:
        return list(cases)
    by_id = {c.case_id: c for c in cases}
    chosen: set[str] = set()
    for label in sorted({c.class_label for c in cases}):
        members = [cid for cid in seeded_order([c.case_id for c in cases], seed) if by_id[cid].class_label == label]
        chosen.update(members[: fraction_count(len(members), fraction)])
    return [c for c in cases if c.case_id in chosen]


PROBE_FILES = {"metrics": "metrics.parquet", "predictions": "predictions.parquet"}
# Inverse regularisation strengths tried on val (scikit-learn's C).
REGULARIZATION_GRID = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)


@dataclass
class ProbeResult:
    """A fitted probe's test predictions and scores.

    Attributes:
        classes: class labels, the column order of ``probabilities``.
        probabilities: ``(n_test, n_classes)`` predicted probabilities.
        auroc: ROC AUC (binary) or one-vs-rest macro AUROC; NaN if the test split holds one class.
        accuracy: share of correct argmax predictions.
        balanced_accuracy: mean per-class recall.
        regularization: the selected inverse regularisation strength.
    """

    classes: np.ndarray
    probabilities: np.ndarray
    auroc: float
    accuracy: float
    balanced_accuracy: float
    regularization: float


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray, classes: Sequence[int]) -> dict[str, float]:
    """AUROC (one-vs-rest macro beyond two classes), accuracy and balanced accuracy.

    Args:
        y_true: ``(n,)`` true labels.
        probabilities: ``(n, len(classes))`` predicted probabilities, columns in ``classes`` order.
        classes: the label of each column.
    """
    y_true = np.asarray(y_true)
    classes = np.asarray(classes)
    predicted = classes[np.argmax(probabilities, axis=1)]
    if len(np.unique(y_true)) < 2:
        auroc = math.nan
    elif len(classes) == 2:
        auroc = float(roc_auc_score(y_true, probabilities[:, 1]))
    else:
        auroc = float(roc_auc_score(y_true, probabilities, multi_class="ovr", average="macro", labels=classes))
    return {"auroc": auroc, "accuracy": float(accuracy_score(y_true, predicted)),
            "balanced_accuracy": float(balanced_accuracy_score(y_true, predicted))}


def _check_labels(train_y: np.ndarray) -> np.ndarray:
    classes = np.unique(train_y)
    if len(classes) < 2:
        raise ValueError(f"the train split needs at least two classes for a classifier, got {classes.tolist()}")
    return classes


def fit_linear_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                     test_x: np.ndarray, test_y: np.ndarray, grid: Sequence[float] = REGULARIZATION_GRID) -> ProbeResult:
    """Logistic regression on pooled features, regularisation selected on val, refit on train + val.

    Args:
        train_x, val_x, test_x: ``(n, C)`` feature vectors.
        train_y, val_y, test_y: ``(n,)`` integer labels. An empty val split
            selects ``C = 1`` (scikit-learn's default).
        grid: inverse regularisation strengths tried on val.
    """
    classes = _check_labels(train_y)
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6

    def fit(x: np.ndarray, y: np.ndarray, c: float) -> LogisticRegression:
        return LogisticRegression(C=c, max_iter=5000).fit((x - mean) / std, y)

    best_c = 1.0
    if len(val_y):
        losses = [log_loss(val_y, fit(train_x, train_y, c).predict_proba((val_x - mean) / std), labels=classes) for c in grid]
        best_c = grid[int(np.argmin(losses))]
    final = fit(np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y]), best_c)
    probabilities = final.predict_proba((test_x - mean) / std)
    return ProbeResult(classes, probabilities, regularization=best_c, **classification_metrics(test_y, probabilities, classes))


class _GatedAttentionHead(nn.Module):
    """Gated attention pooling of voxel features into one vector per case, then a linear classifier.

    ``forward(tokens, mask)``: tokens ``(n, N, C)`` padded to the largest case,
    mask ``(n, N)`` true on real voxels; returns logits ``(n, n_classes)``.
    """

    def __init__(self, channels: int, n_classes: int) -> None:
        super().__init__()
        hidden = max(channels // 2, 1)
        self.value = nn.Linear(channels, hidden)
        self.gate = nn.Linear(channels, hidden)
        self.score = nn.Linear(hidden, 1)
        self.classifier = nn.Linear(channels, n_classes)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.score(torch.tanh(self.value(tokens)) * torch.sigmoid(self.gate(tokens)))[..., 0]
        weights = torch.softmax(scores.masked_fill(~mask, -torch.inf), dim=1)
        return self.classifier(torch.einsum("nv,nvc->nc", weights, tokens))


def fit_attention_probe(train_x: Sequence[np.ndarray], train_y: np.ndarray, val_x: Sequence[np.ndarray], val_y: np.ndarray,
                        test_x: Sequence[np.ndarray], test_y: np.ndarray, seed: int, epochs: int = 200,
                        grid: Sequence[float] = REGULARIZATION_GRID) -> ProbeResult:
    """Attention pooling + linear classifier on frozen voxel features; weight decay selected on val.

    Args:
        train_x, val_x, test_x: one ``(N_i, C)`` array of voxel features per case.
        train_y, val_y, test_y: ``(n,)`` integer labels.
        seed: seeds the head's initialisation.
        epochs: full-batch Adam steps.
        grid: inverse regularisation strengths tried on val (weight decay ``1 / (C * n)``).
    """
    classes = _check_labels(train_y)
    stacked = np.concatenate(list(train_x))
    mean, std = stacked.mean(axis=0), stacked.std(axis=0) + 1e-6
    index = {c: i for i, c in enumerate(classes)}

    def padded(xs: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        longest = max((len(x) for x in xs), default=1)
        tokens = torch.zeros(len(xs), longest, stacked.shape[1])
        mask = torch.zeros(len(xs), longest, dtype=torch.bool)
        for i, x in enumerate(xs):
            tokens[i, : len(x)] = torch.from_numpy(((x - mean) / std).astype(np.float32))
            mask[i, : len(x)] = True
        return tokens, mask

    def fit(xs: Sequence[np.ndarray], y: np.ndarray, c: float) -> _GatedAttentionHead:
        torch.manual_seed(seed)
        head = _GatedAttentionHead(stacked.shape[1], len(classes))
        # L2 strength 1 / (C * n), as in scikit-learn's logistic regression.
        optimizer = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1.0 / c / len(xs))
        tokens, mask = padded(xs)
        target = torch.tensor([index[v] for v in y])
        for _ in range(epochs):
            loss = nn.functional.cross_entropy(head(tokens, mask), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return head

    def predict(head: _GatedAttentionHead, xs: Sequence[np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(head(*padded(xs)), dim=1).numpy()

    best_c = 1.0
    if len(val_y):
        losses = [log_loss(val_y, predict(fit(train_x, train_y, c), val_x), labels=classes) for c in grid]
        best_c = grid[int(np.argmin(losses))]
    final = fit([*train_x, *val_x], np.concatenate([train_y, val_y]), best_c)
    probabilities = predict(final, test_x)
    return ProbeResult(classes, probabilities, regularization=best_c, **classification_metrics(test_y, probabilities, classes))


def deepest_features(encoder: ResidualEncoder, image: np.ndarray, device: torch.device) -> np.ndarray:
    """The encoder's deepest feature map ``(C, x, y, z)`` over a whole standardized volume.

    The volume is padded with its minimum (air) up to a multiple of the
    encoder's downsampling factor; the whole volume is one forward pass, so
    every case is pooled over all of its anatomy.
    """
    factor = encoder.config.downsampling_factor
    volume = np.asarray(image, dtype=np.float32)
    pad = [(0, -n % factor) for n in volume.shape]
    volume = np.pad(volume, pad, constant_values=float(volume.min()))
    with torch.no_grad():
        features = encoder(torch.from_numpy(volume)[None, None].to(device))[-1]
    return features[0].float().cpu().numpy()


def _features(encoder: ResidualEncoder, cases: Sequence[EvalCase], device: torch.device, pooling: str) -> list[np.ndarray]:
    maps = [deepest_features(encoder, c.image, device) for c in cases]
    if pooling == "avg":
        return [m.reshape(m.shape[0], -1).mean(axis=1) for m in maps]
    return [m.reshape(m.shape[0], -1).T for m in maps]


def run_probe(
    manifest_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    dataset: str,
    method: str,
    seed: int,
    encoder_weights: str | os.PathLike | None,
    encoder_config: EncoderConfig | None,
    params: ProbeParams,
    threads: int | None = None,
) -> pd.DataFrame:
    """Probe the frozen encoder on the manifest's ``class_label``; write :data:`PROBE_FILES` into ``out_dir``.

    Args:
        manifest_path: the dataset's ``manifest.parquet``; cases with
            ``class_label == -1`` are left out.
        out_dir: output folder.
        dataset, method: names written into the outputs.
        seed: seeds the attention head (and the encoder when ``encoder_weights`` is ``None``).
        encoder_weights: the method's ``encoder.pt``; ``None`` for a random encoder seeded by ``seed``.
        encoder_config: encoder shape (checked against ``encoder_weights``; required without).
        params: pooling and device.
        threads: torch CPU threads; ``None`` leaves torch's default.

    Returns:
        the one-row metrics table. A dataset without two classes in its
        train split gets NaN scores and a ``note`` instead of failing the run.
    """
    # metrics.parquet, written last, marks a finished run.
    job = start_job(out_dir, PROBE_FILES, "metrics", threads, params.device)
    torch_device = job.device
    splits = {s: [c for c in load_split(manifest_path, s, require_labels=False) if c.class_label >= 0] for s in ("train", "val", "test")}
    splits["train"] = train_subset(splits["train"], params.train_fraction, seed)
    labels = {s: np.asarray([c.class_label for c in cases], dtype=np.int64) for s, cases in splits.items()}
    row = {"dataset": dataset, "method": method, "seed": int(seed), "pooling": params.pooling,
           "auroc": math.nan, "accuracy": math.nan, "balanced_accuracy": math.nan, "regularization": math.nan,
           **{f"n_{s}": len(cases) for s, cases in splits.items()}, "note": ""}
    predictions = pd.DataFrame({"case_id": pd.Series(dtype=str), "class_label": pd.Series(dtype=np.int64)})
    if len(np.unique(labels["train"])) < 2 or not len(labels["test"]):
        row["note"] = "needs two classes in train and a labeled test split"
    else:
        if encoder_weights is not None:
            encoder = load_encoder(encoder_weights, config=encoder_config)
        elif encoder_config is None:
            raise ValueError("encoder_config is required when no encoder_weights are given")
        else:
            torch.manual_seed(seed)
            encoder = ResidualEncoder(encoder_config)
        encoder = encoder.to(torch_device).eval()
        features = {s: _features(encoder, cases, torch_device, params.pooling) for s, cases in splits.items()}
        if params.pooling == "avg":
            stack = {s: np.stack(f) if f else np.zeros((0, encoder.config.channels[-1])) for s, f in features.items()}
            result = fit_linear_probe(stack["train"], labels["train"], stack["val"], labels["val"], stack["test"], labels["test"])
        else:
            result = fit_attention_probe(features["train"], labels["train"], features["val"], labels["val"],
                                         features["test"], labels["test"], seed)
        row.update(auroc=result.auroc, accuracy=result.accuracy, balanced_accuracy=result.balanced_accuracy,
                   regularization=result.regularization)
        predictions = pd.DataFrame({"case_id": [c.case_id for c in splits["test"]], "class_label": labels["test"],
                                    "predicted": result.classes[np.argmax(result.probabilities, axis=1)],
                                    **{f"prob_{c}": result.probabilities[:, i] for i, c in enumerate(result.classes)}})
    row["seconds"] = job.seconds()["total_seconds"]
    metrics = pd.DataFrame([row])
    job.write_table("predictions", predictions)
    job.write_table("metrics", metrics)
    return metrics
