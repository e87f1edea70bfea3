"""Which training case a pretraining sample comes from.

Pretraining datasets differ in size by two orders of magnitude (TotalSegmentator
against BTCV); the MASS paper therefore draws scans with replacement, each
with its dataset's weight (``datasets.<name>.pretrain_weight``). With equal
weights a draw is the uniform ``rng.integers(n)`` it always was, so runs
without weights keep their numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["CaseDraw"]


class CaseDraw:
    """Draws a case index, uniformly or in proportion to per-case weights.

    Args:
        count: number of cases.
        weights: one weight > 0 per case, or ``None`` for uniform draws.

    Example:
        >>> draw = CaseDraw(3, [6.0, 1.0, 1.0])
        >>> draw(np.random.default_rng(0)) in (0, 1, 2)
        True
    """

    def __init__(self, count: int, weights: Sequence[float] | None = None) -> None:
        if count < 1:
            raise ValueError(f"there must be at least one case to draw from, got {count}")
        self.count = count
        self.cumulative: np.ndarray | None = None
        if weights is None:
            return
        values = np.asarray(weights, dtype=np.float64)
        if values.shape != (count,):
            raise ValueError(f"need one weight per case ({count}), got {values.shape[0] if values.ndim == 1 else values.shape}")
        if not np.isfinite(values).all() or (values <= 0).any():
            raise ValueError(f"case weights must be finite and > 0, got min {values.min()}")
        if not np.all(values == values[0]):
            self.cumulative = np.cumsum(values) / values.sum()

    def __call__(self, rng: np.random.Generator) -> int:
        if self.cumulative is None:
            return int(rng.integers(self.count))
        # min(): a draw within rounding of 1.0 must not fall past the last case.
        return min(int(np.searchsorted(self.cumulative, rng.random(), side="right")), self.count - 1)
