from __future__ import annotations

import math

import pytest
import torch
from monai.losses import TverskyLoss

from mass_core.pretrain.losses import SMOOTH, adaptive_alpha, mass_loss, tversky_loss

torch.set_num_threads(1)


def _logits(probs):
    p = torch.tensor(probs, dtype=torch.float64)
    return torch.log(p / (1 - p))


def test_hand_computed_case():
    # One mask over four voxels: TP = 0.8 + 0.6, FP = 0.3 + 0.1, FN = 0.2 + 0.4.
    logits = _logits([0.8, 0.6, 0.3, 0.1]).view(1, 1, 4)
    targets = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64).view(1, 1, 4)
    terms = mass_loss(logits, targets, torch.ones(1, 1, dtype=torch.bool))
    alpha = 0.4 / (0.4 + 0.6)
    tversky = 1 - (1.4 + SMOOTH) / (1.4 + alpha * 0.4 + (1 - alpha) * 0.6 + SMOOTH)
    bce = -(math.log(0.8) + math.log(0.6) + math.log(0.7) + math.log(0.9)) / 4
    assert terms.tversky.item() == pytest.approx(tversky, abs=1e-6)
    assert terms.bce.item() == pytest.approx(bce, abs=1e-6)
    assert terms.total.item() == pytest.approx(tversky + bce, abs=1e-6)
    assert terms.present_fraction.item() == 1.0
    assert set(terms.as_dict()) == {"loss", "tversky", "bce", "present_fraction"}


@pytest.mark.parametrize(
    "probs, targets, expected",
    [
        ([0.9, 0.9, 0.9, 0.1], [1, 0, 0, 0], 0.8),  # false positives only: clamped at the top
        ([0.1, 0.1, 0.1, 0.1], [1, 1, 1, 0], 0.2),  # false negatives dominate: clamped at the bottom
        ([1.0, 0.0, 0.0, 0.0], [1, 0, 0, 0], 0.5),  # no error at all
    ],
)
def test_adaptive_alpha_clamps(probs, targets, expected):
    alpha = adaptive_alpha(torch.tensor(probs).view(1, 1, 4), torch.tensor(targets, dtype=torch.float32).view(1, 1, 4))
    assert alpha.item() == pytest.approx(expected)


@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.7])
def test_fixed_alpha_matches_monai(alpha):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 6, 6, 6, generator=g)
    targets = (torch.rand(2, 3, 6, 6, 6, generator=g) > 0.6).float()
    reference = TverskyLoss(sigmoid=True, alpha=alpha, beta=1 - alpha, reduction="none")(logits, targets)
    assert torch.allclose(tversky_loss(torch.sigmoid(logits), targets, alpha), reference.view(2, 3), atol=1e-6)


def test_absent_and_invalid_masks():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 3, 4, 4, 4, generator=g, requires_grad=True)
    targets = torch.zeros(1, 3, 4, 4, 4)
    targets[0, 0, :2] = 1  # present; mask 1 is absent from the query; mask 2 is padding
    valid = torch.tensor([[True, True, False]])
    terms = mass_loss(logits, targets, valid)
    only_present = mass_loss(logits[:, :1], targets[:, :1], valid[:, :1])
    assert terms.tversky.item() == pytest.approx(only_present.tversky.item())
    bce_two = mass_loss(logits[:, :2], targets[:, :2], valid[:, :2]).bce
    assert terms.bce.item() == pytest.approx(bce_two.item())
    assert terms.present_fraction.item() == pytest.approx(0.5)
    terms.total.backward()
    assert logits.grad[0, 2].abs().max() == 0  # padding gets no gradient
    assert logits.grad[0, 1].abs().max() > 0  # the absent mask still learns "nothing here"


def test_alpha_is_detached():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 2, 5, 5, 5, generator=g, requires_grad=True)
    targets = (torch.rand(1, 2, 5, 5, 5, generator=g) > 0.5).float()
    mass_loss(logits, targets, torch.ones(1, 2)).tversky.backward()
    fixed = logits.detach().clone().requires_grad_(True)
    alpha = adaptive_alpha(torch.sigmoid(fixed), targets)
    tversky_loss(torch.sigmoid(fixed), targets, alpha).mean().backward()
    assert torch.allclose(logits.grad, fixed.grad)


def test_all_invalid_gives_zero_not_nan():
    terms = mass_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.zeros(1, 2))
    assert terms.total.item() == 0


def test_bad_shapes():
    with pytest.raises(ValueError, match="logits and targets"):
        mass_loss(torch.zeros(1, 2, 4), torch.zeros(1, 3, 4), torch.ones(1, 2))
    with pytest.raises(ValueError, match="valid"):
        mass_loss(torch.zeros(1, 2, 4), torch.zeros(1, 2, 4), torch.ones(2))
    with pytest.raises(ValueError, match="low and high"):
        adaptive_alpha(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), 0.9, 0.1)


def _halves_gradient(logits, targets, valid, mean_over_ranks) -> tuple[torch.Tensor, torch.Tensor]:
    """Two 'ranks' holding the two halves of the batch: the mean of their losses and of their gradients, as DDP takes them."""
    totals, grads = [], []
    for half in (slice(0, 2), slice(2, 4)):
        x = logits[half].clone().requires_grad_(True)
        total = mass_loss(x, targets[half], valid[half], mean_over_ranks=mean_over_ranks).total
        total.backward()
        totals.append(total.detach())
        grads.append(x.grad)
    return sum(totals) / 2, torch.cat(grads) / 2


def test_two_ranks_with_the_global_counts_give_the_gradient_of_the_whole_batch():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 3, 5, 5, 5, generator=g)
    targets = (torch.rand(4, 3, 5, 5, 5, generator=g) > 0.6).float()
    targets[1, 1:] = 0
    targets[2] = 0
    valid = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 0, 0], [1, 1, 0]], dtype=torch.bool)
    whole = logits.clone().requires_grad_(True)
    reference = mass_loss(whole, targets, valid).total
    reference.backward()

    recorded = []

    def record(counts: torch.Tensor) -> torch.Tensor:
        recorded.append(counts)
        return counts

    for half in (slice(0, 2), slice(2, 4)):
        mass_loss(logits[half], targets[half], valid[half], mean_over_ranks=record)
    # (present, valid) masks per half: the all-reduce gives each rank their mean.
    assert [c.tolist() for c in recorded] == [[4.0, 6.0], [2.0, 3.0]]
    mean = (recorded[0] + recorded[1]) / 2
    total, grad = _halves_gradient(logits, targets, valid, lambda counts: mean)
    torch.testing.assert_close(total, reference.detach(), rtol=1e-6, atol=0)
    torch.testing.assert_close(grad, whole.grad, rtol=1e-5, atol=1e-9)
    # Each rank dividing by its own counts weights the masks of the sparser half up.
    total, grad = _halves_gradient(logits, targets, valid, None)
    assert not torch.allclose(grad, whole.grad, rtol=1e-2, atol=1e-6)
