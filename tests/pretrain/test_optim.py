from __future__ import annotations

import pytest
import torch

from mass_core.pretrain.optim import Lamb, build_optimizer, build_scheduler


def _reference_lamb_step(params, states, lr, betas, eps, weight_decay):
    """Textbook LAMB, one tensor at a time (You et al. 2020, Algorithm 2)."""
    b1, b2 = betas
    for p, state in zip(params, states):
        state["t"] = state.get("t", 0) + 1
        state.setdefault("m", torch.zeros_like(p))
        state.setdefault("v", torch.zeros_like(p))
        state["m"] = b1 * state["m"] + (1 - b1) * p.grad
        state["v"] = b2 * state["v"] + (1 - b2) * p.grad**2
        update = (state["m"] / (1 - b1 ** state["t"])) / ((state["v"] / (1 - b2 ** state["t"])).sqrt() + eps) + weight_decay * p
        w, u = p.norm(), update.norm()
        trust = w / u if w > 0 and u > 0 else 1.0
        with torch.no_grad():
            p -= lr * trust * update


def test_lamb_matches_the_textbook_algorithm():
    torch.manual_seed(0)
    ours = [torch.randn(5, 3, requires_grad=True), torch.zeros(4, requires_grad=True)]
    reference = [p.detach().clone().requires_grad_(True) for p in ours]
    optimizer = Lamb(ours, lr=0.01, weight_decay=0.1)
    states = [{}, {}]
    for _ in range(5):
        for params in (ours, reference):
            for p in params:
                p.grad = None
            ((params[0].sum(0) ** 2).sum() + (params[1] - 1).pow(2).sum()).backward()
        optimizer.step()
        _reference_lamb_step(reference, states, 0.01, (0.9, 0.999), 1e-6, 0.1)
    for a, b in zip(ours, reference):
        assert torch.allclose(a, b, atol=1e-6)


def test_lamb_state_survives_a_weights_only_round_trip(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = Lamb(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    torch.save(optimizer.state_dict(), tmp_path / "opt.pt")
    restored = Lamb(torch.nn.Linear(3, 2).parameters(), lr=0.1)
    restored.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    assert restored.state_dict()["state"][0]["step"] == 1


def test_no_decay_on_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    groups = build_optimizer(model, "adamw", 1e-3, 0.05).param_groups
    assert [len(g["params"]) for g in groups] == [1, 3]
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    with pytest.raises(ValueError, match="optimizer"):
        build_optimizer(model, "sgd", 1e-3, 0.0)


def test_one_cycle_schedule_peaks_after_the_warm_up():
    optimizer = build_optimizer(torch.nn.Linear(2, 2), "lamb", 2e-3, 0.0)
    scheduler = build_scheduler(optimizer, 2e-3, 100, 0.05)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert max(lrs) == pytest.approx(2e-3)
    assert lrs.index(max(lrs)) == 4  # 5% of 100 steps
    assert lrs[0] == pytest.approx(2e-3 / 25) and lrs[-1] < 1e-6
    with pytest.raises(ValueError, match="warmup_fraction"):
        build_scheduler(optimizer, 2e-3, 100, 0.0)
