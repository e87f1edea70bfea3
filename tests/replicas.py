"""Comparing the weights of runs that must agree up to float rounding (several processes against one)."""

from __future__ import annotations

import copy
from typing import Collection, Mapping

import torch
from torch import nn


def gradient_free(model: nn.Module, *inputs: torch.Tensor) -> set[str]:
    """Names of ``model``'s parameters whose gradient is 0 in exact arithmetic.

    Such are the biases of layers that a normalisation follows (it subtracts
    them again). In float32 their gradient is round-off, which depends on the
    order of the sums and so differs between a run on several processes and
    one on one; LAMB scales it into full-size steps, so these weights drift
    apart without changing what the network computes. Found in float64 on a
    copy: gradients below 1e-12 of the largest, of a random weighting of
    ``model(*inputs)`` (a tensor).
    """
    exact = copy.deepcopy(model).double()
    output = exact(*(x.double() for x in inputs))
    (output * torch.randn(output.shape, generator=torch.Generator().manual_seed(0), dtype=output.dtype)).sum().backward()
    largest = max(p.grad.abs().max() for p in exact.parameters() if p.grad is not None)
    return {name for name, p in exact.named_parameters() if p.grad is None or p.grad.abs().max() < 1e-12 * largest}


def assert_weights_close(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], atol: float, label: str,
                         excluded: Collection[str] = ()) -> None:
    """Every tensor of ``b`` not ``excluded`` equals ``a``'s within ``atol``; the excluded are a minority."""
    compared = [key for key in b if key not in excluded]
    assert len(compared) > len(b) / 2
    for key in compared:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=atol, msg=f"{label}: {key}")
