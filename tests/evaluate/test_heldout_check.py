"""The held-out in-context check run during MASS pretraining (mass_core.pretrain.heldout)."""

from __future__ import annotations

import pytest
import torch

from mass_core.evaluate.cases import load_split
from mass_core.models.incontext import TaskTokens
from mass_core.pretrain.heldout import HeldOutCheck, HeldOutConfig, mean_present_dice
from mass_core.pretrain.sampler import SamplerConfig
from mass_core.pretrain.synthetic import synthetic_case as proposal_case


class _MatchesIntensity(torch.nn.Module):
    """Segments the query voxels whose intensity is near the mean intensity under the reference mask."""

    def encode_task(self, reference: torch.Tensor, ref_masks: torch.Tensor) -> TaskTokens:
        mean = (reference * ref_masks).sum((2, 3, 4)) / ref_masks.sum((2, 3, 4)).clamp_min(1)
        return TaskTokens([mean[:, :, None, None]])

    def segment(self, query: torch.Tensor, task: TaskTokens) -> torch.Tensor:
        return 4 * (1 - (query - task.tokens[0][:, :, 0, 0, None, None, None]).abs())

    def forward(self, query, reference, ref_masks):
        return self.segment(query, self.encode_task(reference, ref_masks))


class _IgnoresReference(_MatchesIntensity):
    def segment(self, query: torch.Tensor, task: TaskTokens) -> torch.Tensor:
        return (4 * query).repeat(1, task.num_masks, 1, 1, 1)


class _PredictsNothing(_MatchesIntensity):
    def segment(self, query: torch.Tensor, task: TaskTokens) -> torch.Tensor:
        return torch.full((query.shape[0], task.num_masks, *query.shape[2:]), -5.0)


def _check(tiny_dataset, proposal_cases=()):
    train, val = load_split(tiny_dataset, "train", True), load_split(tiny_dataset, "val", True)
    sampler = SamplerConfig(crop_size=16, num_masks=3, min_mask_voxels=8)
    return HeldOutCheck(list(proposal_cases), sampler, train, val, HeldOutConfig(cases=2, proposal_tasks=4), (16, 16, 16))


def test_a_model_that_reads_its_reference_has_a_large_swap_gap(tiny_dataset):
    # Class 1 is bright, class 2 dark: matching the reference's intensity segments the right class.
    scores = _check(tiny_dataset)(_MatchesIntensity(), torch.device("cpu"))
    assert scores["val_incontext_dice"] > 0.9 and scores["val_swapped_dice"] < 0.05
    assert scores["val_swap_gap"] == pytest.approx(scores["val_incontext_dice"] - scores["val_swapped_dice"])


def test_a_model_that_ignores_its_reference_has_no_swap_gap(tiny_dataset):
    scores = _check(tiny_dataset)(_IgnoresReference(), torch.device("cpu"))
    assert scores["val_swap_gap"] == pytest.approx(0.0, abs=1e-9)


def test_proposal_tasks_are_scored_on_masks_present_in_the_query(tiny_dataset):
    cases = [proposal_case(seed, (24, 24, 24), n_objects=6, case_id=f"p{seed}") for seed in range(2)]
    check = _check(tiny_dataset, cases)
    assert check(_PredictsNothing(), torch.device("cpu"))["val_proposal_dice"] == 0.0
    # The same fixed tasks every time: a check is comparable across steps.
    first, second = check(_MatchesIntensity(), torch.device("cpu")), check(_MatchesIntensity(), torch.device("cpu"))
    assert first == second and 0 < first["val_proposal_dice"] <= 1


def test_mean_present_dice_skips_padding_and_empty_targets():
    targets = torch.zeros(1, 3, 2, 2, 2)
    targets[0, 0, 0] = 1  # 4 voxels
    targets[0, 1, 0, 0] = 1  # 2 voxels, padding slot
    logits = torch.full_like(targets, -1.0)
    logits[0, 0, :, 0] = 1  # 4 voxels predicted, 2 of them right: Dice 2 * 2 / 8
    logits[0, 2] = 1  # empty target: not scored
    valid = torch.tensor([[True, False, True]])
    assert mean_present_dice(logits, targets, valid) == pytest.approx(0.5)
