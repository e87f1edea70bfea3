"""Held-out in-context check of a MASS model during pretraining.

Pretraining loss alone cannot tell whether the model segments *what the
reference marks* or merely *what stands out* in the query: both lower the
loss on supervoxel tasks. Every ``train.validate_every`` steps the trainer
calls this check on the EMA weights, and the numbers go to
``validation.csv`` beside ``metrics.csv``:

- ``val_proposal_dice``: Dice on fixed tasks drawn from the proposals of the
  val cases (never trained on), with no augmentation and no all-ones mask;
  it needs no labels;
- ``val_incontext_dice``: where the val cases have label maps, the few-shot
  protocol of :mod:`mass_core.evaluate.fewshot` at k = 1 (one train case
  per class as reference, sliding window over the val volume);
- ``val_swapped_dice`` and ``val_swap_gap``: the same with every class given
  another class's reference; the gap is the share of the Dice that comes from
  reading the reference.

Only the train split supplies references and only the val split queries, so
the test split stays untouched. The check selects nothing: the run still
ends with its last EMA weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import default_collate

from mass_core.config_section import from_section
from mass_core.evaluate.cases import EvalCase
from mass_core.evaluate.fewshot import FewshotParams, incontext_metrics, reference_tokens, select_references
from mass_core.models.incontext import InContextSegmenter
from mass_core.pretrain.augment import IntensityAugConfig, SpatialAugConfig
from mass_core.pretrain.sampler import CaseSource, SamplerConfig, TaskSampler

__all__ = ["HeldOutCheck", "HeldOutConfig", "mean_present_dice"]

_NO_INTENSITY = IntensityAugConfig(probability=0)
_NO_AFFINE = SpatialAugConfig(probability=0)
# Fixed task keys, far from any training step, so that every check scores the same tasks.
_TASK_SEED = 2**31 - 1


@dataclass(frozen=True)
class HeldOutConfig:
    """What the check scores (config key ``pretrain.mass.heldout``).

    Args:
        cases: val cases used as queries, the first ones by case id (fewer if
            the split is smaller); bounds the cost of a check.
        proposal_tasks: proposal tasks scored for ``val_proposal_dice``.
        overlap: sliding-window overlap of the label check.
    """

    cases: int = 4
    proposal_tasks: int = 16
    overlap: float = 0.25

    def __post_init__(self) -> None:
        if self.cases < 1 or self.proposal_tasks < 0:
            raise ValueError(f"cases must be >= 1 and proposal_tasks >= 0, got {self.cases}, {self.proposal_tasks}")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> HeldOutConfig:
        """Build from ``pretrain.mass.heldout``; unknown keys raise ``ValueError``."""
        return from_section(cls, section, "pretrain.mass.heldout")


def mean_present_dice(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> float:
    """Mean Dice of ``logits > 0`` over the valid masks whose target is not empty; NaN if there is none.

    Shapes: ``(B, K, X, Y, Z)`` logits and {0, 1} targets, ``(B, K)`` bool ``valid``.
    """
    predicted = (logits > 0).float()
    sums = (2, 3, 4)
    keep = valid & (targets.sum(sums) > 0)
    dice = 2 * (predicted * targets).sum(sums) / (predicted.sum(sums) + targets.sum(sums)).clamp_min(1)
    return float(dice[keep].mean()) if keep.any() else float("nan")


class HeldOutCheck:
    """Scores an in-context model on val proposals and, where labeled, on val structures.

    Args:
        proposal_cases: val cases with proposal stores (may be empty).
        sampler: the training sampler's settings; the check draws tasks of the
            same crop size and mask floor, without augmentation or all-ones mask.
        references: labeled train cases (references of the label check).
        queries: labeled val cases (queries of the label check); with no
            references or queries the label check is skipped.
        config: sizes of the check.
        crop: reference crop and sliding window of the label check (the training crop).
    """

    def __init__(self, proposal_cases: Sequence[CaseSource], sampler: SamplerConfig, references: Sequence[EvalCase],
                 queries: Sequence[EvalCase], config: HeldOutConfig, crop: Sequence[int]) -> None:
        self.config = config
        self.tasks = None
        if proposal_cases and config.proposal_tasks:
            # The training tasks' crops and mask floor; overlapping crops, no augmentation, no all-ones mask.
            plain = dataclasses.replace(sampler, full_mask=False, far_query=0.0, reference_intensity=_NO_INTENSITY,
                                        query_intensity=_NO_INTENSITY, query_spatial=_NO_AFFINE)
            drawn = TaskSampler(list(proposal_cases), plain)
            self.tasks = default_collate([drawn.sample(_TASK_SEED, 0, i).to_dict() for i in range(config.proposal_tasks)])
        self.queries = sorted(queries, key=lambda c: c.case_id)[: config.cases]
        self.params = FewshotParams(crop=tuple(crop), roi=tuple(crop), overlap=config.overlap)
        self.classes = sorted({c for case in self.queries for c in case.label_classes})
        self.references = {case.case_id: case for case in references}
        chosen = select_references({cid: c.label_classes for cid, c in self.references.items()}, self.classes, 1, 0) if self.classes else {}
        self.chosen = {c: refs for c, refs in chosen.items() if refs}

    @torch.no_grad()
    def __call__(self, model: InContextSegmenter, device: torch.device) -> dict[str, float]:
        """The check's numbers for ``model`` (switched to eval mode and back)."""
        was_training = model.training
        model.eval()
        try:
            scores = self._proposals(model, device) | self._labels(model, device)
        finally:
            model.train(was_training)
        return scores

    def _proposals(self, model: InContextSegmenter, device: torch.device) -> dict[str, float]:
        if self.tasks is None:
            return {}
        t = {k: v.to(device) for k, v in self.tasks.items()}
        logits = model(t["query_image"].float(), t["reference_image"].float(), t["reference_masks"].float())
        return {"val_proposal_dice": mean_present_dice(logits, t["query_masks"].float(), t["valid"])}

    def _labels(self, model: InContextSegmenter, device: torch.device) -> dict[str, float]:
        if not self.chosen or not self.queries:
            return {}
        classes = list(self.chosen)
        references = {cid: (self.references[cid].image, self.references[cid].label) for refs in self.chosen.values() for cid in refs}
        tokens = reference_tokens(model, references, self.chosen, self.params.crop, device)
        rows = pd.concat([incontext_metrics(model, np.asarray(q.image), np.asarray(q.label), q.spacing_mm, tokens, classes, self.params,
                                            device, hd95=False) for q in self.queries], ignore_index=True)
        # The paper's averaging: over the cases containing a class, then over classes.
        dice = rows.groupby(["references", "class_id"])["dice"].mean().groupby("references").mean()
        scores = {"val_incontext_dice": float(dice["own"])}
        if "swapped" in dice:
            scores |= {"val_swapped_dice": float(dice["swapped"]), "val_swap_gap": float(dice["own"] - dice["swapped"])}
        return scores
