"""In-context few-shot segmentation with a MASS checkpoint (the ``incontext_fewshot`` job).

No training: the pretrained in-context model segments every test volume given
k labeled reference cases from the train split. The protocol of the paper:

- references per class: the first k train cases (in a seeded order shared by
  all k, so the k = 1 references are among the k = 3 ones) that contain the
  class; each contributes one crop centred on the class (the centre of its
  bounding box) with the class's binary mask in it;
- the task tokens of a class are averaged over its references
  (:meth:`~mass_core.models.incontext.TaskTokens.mean`), computed once, and
  reused for every window of every test volume;
- sliding window (50% overlap) over the whole test volume; a voxel belongs to
  a class where its sigmoid probability exceeds 0.5 (classes may overlap);
- Dice and HD95 per class and test case (:mod:`mass_core.evaluate.metrics`).

The reference-swap control: every test volume is also segmented with each
class given the references of another class (:func:`swap_order`, a cyclic
shift over the scored classes) and scored against the first class's truth.
Rows carry ``references`` = ``"own"`` or ``"swapped"``. A model that reads its
references scores much lower with swapped ones; a model that ignores them
(one that segments "whatever is salient") scores the same, so the gap between
the two says how much of the Dice comes from the reference. The swapped
predictions are the own predictions re-assigned to other classes, so the
control costs no extra inference.

Every class is scored; the phantom's lesion (class 7) is the structure no
pretext task targets, the "novel structure" of the paper.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from mass_core.config_section import from_section
from mass_core.evaluate.cases import dataset_classes, load_split
from mass_core.evaluate.metrics import mask_metrics
from mass_core.evaluate.subsets import seeded_order
from mass_core.evaluate.job import start_job
from mass_core.evaluate.windows import centred_box, check_window, extract_crop, sliding_window_logits
from mass_core.labels import ignored
from mass_core.models.incontext import InContextConfig, InContextSegmenter, TaskTokens
from mass_core.pretrain.checkpoint import load_checkpoint, load_state_dict_checked

__all__ = [
    "FEWSHOT_FILES",
    "FewshotParams",
    "class_probabilities",
    "load_incontext_segmenter",
    "incontext_metrics",
    "reference_tokens",
    "run_fewshot",
    "select_references",
    "swap_order",
]

FEWSHOT_FILES = {"metrics": "metrics.parquet", "summary": "summary.json"}


@dataclass(frozen=True)
class FewshotParams:
    """Settings of in-context inference (config key ``evaluation.fewshot``).

    Args:
        crop: reference crop ``(X, Y, Z)`` in voxels, centred on the class.
        roi: sliding-window size ``(X, Y, Z)`` over the query volume. Use the
            pretraining crop size for both: the model's InstanceNorm statistics
            depend on the field of view, so windows much larger than the
            training crops (padded with air, say) shift every feature.
        overlap: sliding-window overlap (the paper: 0.5).
        threshold: sigmoid probability above which a voxel is in the mask (the paper: 0.5).
        sw_batch: windows per forward pass; at least 2 on CPU, where PyTorch runs
            a batch of one through its slow reference 3D convolution instead of oneDNN (5-8x slower).
        device: ``auto``, ``cuda`` or ``cpu``.
    """

    crop: tuple[int, int, int] = (32, 32, 32)
    roi: tuple[int, int, int] = (32, 32, 32)
    overlap: float = 0.5
    threshold: float = 0.5
    sw_batch: int = 2
    device: str = "auto"

    def __post_init__(self) -> None:
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.sw_batch < 1:
            raise ValueError(f"sw_batch must be >= 1, got {self.sw_batch}")
        object.__setattr__(self, "crop", tuple(int(c) for c in self.crop))
        object.__setattr__(self, "roi", tuple(int(c) for c in self.roi))

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> FewshotParams:
        """Build from the config's ``evaluation.fewshot`` section; unknown keys raise ``ValueError``."""
        return from_section(cls, section, "evaluation.fewshot")


def load_incontext_segmenter(path: str | os.PathLike) -> InContextSegmenter:
    """The EMA in-context model of a MASS training checkpoint (``final.pt``), in eval mode.

    Raises:
        ValueError: the file is missing or is not a MASS training checkpoint (for
            example an ``encoder.pt``, or a MIM checkpoint, which has no in-context model).
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"checkpoint {path} not found")
    # Imported here: the registry's MASS task imports this module for its held-out check.
    from mass_core.pretrain.run import PRETEXT_TASKS

    state = load_checkpoint(path)
    if state.method not in PRETEXT_TASKS or not PRETEXT_TASKS[state.method].in_context:
        raise ValueError(f"{path} is a {state.method!r} checkpoint; in-context segmentation needs a MASS checkpoint "
                         "(results/pretrain/mass/final.pt)")
    model = InContextSegmenter(InContextConfig.from_dict(state.model_config))
    load_state_dict_checked(model, state.ema, f"{path} (EMA weights)")
    return model.eval()


def select_references(cases: Mapping[str, Sequence[int]], classes: Sequence[int], k: int, seed: int,
                      fixed: Mapping[str, Sequence[str]] | None = None) -> dict[int, list[str]]:
    """The k reference cases of every class.

    Args:
        cases: train case id -> class ids present in its label map.
        classes: classes to segment.
        k: references per class.
        seed: seed of the case order (:func:`~mass_core.evaluate.subsets.seeded_order`).
        fixed: a dataset's fixed references (config ``datasets.<name>.references``):
            class id (as text) or ``"all"`` -> case ids, which come first, in
            their order, before the seeded order (the MASS paper's protocol fixes
            one reference per class).

    Returns:
        class id -> the first ``k`` cases of that order that contain it
        (fewer if fewer train cases contain the class; empty if none does).

    Raises:
        ValueError: a fixed reference is not a train case or lacks its class.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    order = seeded_order(cases, seed)
    chosen = {}
    for c in classes:
        first = list((fixed or {}).get(str(int(c)), (fixed or {}).get("all", [])))
        for cid in first:
            if cid not in cases:
                raise ValueError(f"fixed reference {cid!r} of class {c} is not a labeled train case")
            if c not in set(cases[cid]):
                raise ValueError(f"fixed reference {cid!r} does not contain class {c}")
        chosen[int(c)] = [cid for cid in dict.fromkeys([*first, *order]) if c in set(cases[cid])][:k]
    return chosen


def reference_tokens(
    model: InContextSegmenter,
    references: Mapping[str, tuple[np.ndarray, np.ndarray]],
    chosen: Mapping[int, Sequence[str]],
    crop: Sequence[int],
    device: torch.device,
) -> TaskTokens:
    """Task tokens of every class, averaged over its references; K = ``len(chosen)`` in ``chosen``'s order.

    Args:
        model: the in-context model (eval mode).
        references: case id -> (standardized image ``(X, Y, Z)``, label map ``(X, Y, Z)``).
        chosen: class id -> reference case ids containing the class (non-empty).
        crop: reference crop size in voxels.
        device: where the model runs.
    """
    per_class = []
    for class_id, case_ids in chosen.items():
        if not case_ids:
            raise ValueError(f"class {class_id} has no reference case containing it")
        tasks = []
        for cid in case_ids:
            image, label = references[cid]
            mask = np.asarray(label) == class_id
            if not mask.any():
                raise ValueError(f"reference {cid!r} does not contain class {class_id}")
            coords = np.argwhere(mask)
            centre = (coords.min(axis=0) + coords.max(axis=0)) / 2.0
            start = centred_box(image.shape, crop, centre)
            ref = extract_crop(np.asarray(image, dtype=np.float32), start, crop, float(np.min(image)))
            ref_mask = extract_crop(mask.astype(np.float32), start, crop, 0.0)
            with torch.no_grad():
                tasks.append(model.encode_task(torch.from_numpy(ref)[None, None].to(device), torch.from_numpy(ref_mask)[None, None].to(device)))
        per_class.append(TaskTokens.mean(tasks))
    return TaskTokens.concat(per_class)


def class_probabilities(model: InContextSegmenter, image: np.ndarray, tokens: TaskTokens, roi: Sequence[int], overlap: float,
                        sw_batch: int, device: torch.device) -> np.ndarray:
    """Sigmoid probabilities ``(K, X, Y, Z)`` of the K tasks over a whole standardized volume."""
    logits = sliding_window_logits(image, lambda x: model.segment(x, tokens), roi, overlap, sw_batch, device)
    return torch.sigmoid(logits).numpy()


def swap_order(n_classes: int) -> list[int]:
    """Reference-swap permutation: task ``i`` is scored with the prediction of task ``order[i]``, a cyclic shift by one.

    Example:
        >>> swap_order(3)
        [1, 2, 0]
    """
    if n_classes < 2:
        raise ValueError(f"the swap control needs at least two classes, got {n_classes}")
    return [(i + 1) % n_classes for i in range(n_classes)]


def incontext_metrics(model: InContextSegmenter, image: np.ndarray, label: np.ndarray, spacing_mm: Sequence[float],
                      tokens: TaskTokens, class_ids: Sequence[int], params: FewshotParams, device: torch.device,
                      hd95: bool = True) -> pd.DataFrame:
    """Metrics of one query volume with each class's own references and, with two or more classes, swapped ones.

    Args:
        model: the in-context model (eval mode).
        image, label: the query's standardized image and label map ``(X, Y, Z)``;
            its ignored voxels are left out of the metrics.
        spacing_mm: the query's voxel spacing.
        tokens: K task tokens, one per entry of ``class_ids`` in that order.
        class_ids: the classes the tokens stand for.
        params: window settings and threshold.
        device: where the model runs.
        hd95: ``False`` skips surface distances.

    Returns:
        :func:`~mass_core.evaluate.metrics.mask_metrics` rows plus ``references``
        (``"own"`` or ``"swapped"``); swapped rows are scored against the truth
        of their ``class_id`` with the prediction made from the references of
        class ``class_ids[swap_order(K)[i]]``.
    """
    predicted = class_probabilities(model, image, tokens, params.roi, params.overlap, params.sw_batch, device) > params.threshold
    label = np.asarray(label)
    truth = label[None] == np.asarray(class_ids).reshape(-1, 1, 1, 1)
    unlabeled = ignored(label)
    frames = [mask_metrics(predicted, truth, class_ids, spacing_mm, hd95, unlabeled).assign(references="own")]
    if len(class_ids) > 1:
        frames.append(mask_metrics(predicted[swap_order(len(class_ids))], truth, class_ids, spacing_mm, hd95, unlabeled)
                      .assign(references="swapped"))
    return pd.concat(frames, ignore_index=True)


def run_fewshot(
    manifest_path: str | os.PathLike,
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    dataset: str,
    method: str,
    k: int,
    seed: int,
    params: FewshotParams,
    threads: int | None = None,
    fixed_references: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Segment every test case in context from k references per class; write :data:`FEWSHOT_FILES`.

    Args:
        manifest_path: the dataset's ``manifest.parquet``.
        checkpoint: the method's training checkpoint (``final.pt``) holding the in-context model.
        out_dir: output folder.
        dataset, method: names written into every output row.
        k: references per class.
        seed: seed of the reference order.
        params: inference settings.
        threads: torch CPU threads; ``None`` leaves torch's default.
        fixed_references: the dataset's fixed references (see :func:`select_references`).

    Returns:
        the summary written to ``summary.json``.
    """
    job = start_job(out_dir, FEWSHOT_FILES, "summary", threads, params.device)
    device = job.device
    model = load_incontext_segmenter(checkpoint).to(device)
    factor = model.config.encoder.downsampling_factor
    check_window(params.crop, factor, "crop")
    check_window(params.roi, factor, "roi")
    classes = dataset_classes(manifest_path)
    train = {c.case_id: c for c in load_split(manifest_path, "train", require_labels=True)}
    test = load_split(manifest_path, "test", require_labels=True)
    if not test:
        raise ValueError(f"{manifest_path}: the test split is empty; nothing to evaluate")
    chosen = select_references({cid: c.label_classes for cid, c in train.items()}, classes, k, seed, fixed_references)
    missing = [c for c, refs in chosen.items() if not refs]
    if missing:
        print(f"classes {missing} occur in no train case; they are not scored", file=sys.stderr)
    chosen = {c: refs for c, refs in chosen.items() if refs}
    scored = list(chosen)
    references = {cid: (train[cid].image, train[cid].label) for refs in chosen.values() for cid in refs}
    tokens = reference_tokens(model, references, chosen, params.crop, device)

    frames = [
        incontext_metrics(model, np.asarray(case.image), np.asarray(case.label), case.spacing_mm, tokens, scored, params, device)
        .assign(case_id=case.case_id)
        for case in test
    ]
    metrics = pd.concat(frames, ignore_index=True).assign(dataset=dataset, method=method, k=int(k), seed=int(seed))
    metrics = metrics[["dataset", "method", "k", "seed", "references", "case_id", "class_id", "dice", "hd95_mm", "truth_voxels", "pred_voxels"]]
    job.write_table("metrics", metrics)
    per_class = metrics[metrics["references"] == "own"].groupby("class_id")["dice"].mean()
    swapped = metrics[metrics["references"] == "swapped"].groupby("class_id")["dice"].mean()
    summary = {
        "dataset": dataset,
        "method": method,
        "k": int(k),
        "seed": int(seed),
        "checkpoint": str(checkpoint),
        "references": {str(c): refs for c, refs in chosen.items()},
        "unscored_classes": missing,
        "params": {key: list(v) if isinstance(v, tuple) else v for key, v in asdict(params).items()},
        "test_cases": [c.case_id for c in test],
        "test_dice": float(per_class.mean()),
        "test_dice_per_class": {str(c): (None if np.isnan(v) else float(v)) for c, v in per_class.items()},
        "swapped_test_dice": float(swapped.mean()) if len(swapped) else None,
    }
    return job.write_summary(summary)
