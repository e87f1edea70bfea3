"""Label-fraction subsets of a training split: nested and deterministic.

Every fraction of one dataset takes a prefix of the same seeded permutation
of the (sorted) training case ids, so the 10% subset is inside the 20% one,
which is inside the 40% one, and so on: a larger fraction only adds labels,
and differences between fractions are never due to a different draw of cases.
The permutation depends on the case ids and the seed only, not on the order
in which cases are listed.

:func:`finetune_seeds` says which training seeds each fraction is finetuned
with, so that the noisiest (fewest-label) fractions can be repeated alone.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["fraction_count", "finetune_seeds", "label_fraction_subset", "seeded_order"]


def seeded_order(case_ids: Iterable[str], seed: int) -> list[str]:
    """The case ids, sorted, then shuffled with ``numpy.random.default_rng(seed)``.

    Raises:
        ValueError: duplicate case ids.
    """
    ids = sorted(str(c) for c in case_ids)
    if len(set(ids)) != len(ids):
        raise ValueError(f"case ids must be unique, got duplicates {sorted({c for c in ids if ids.count(c) > 1})}")
    permutation = np.random.default_rng(seed).permutation(len(ids))
    return [ids[i] for i in permutation]


def fraction_count(n_cases: int, fraction: float) -> int:
    """Number of cases of a fraction: ``round(fraction * n_cases)`` (halves up), at least 1.

    Example:
        >>> [fraction_count(14, f) for f in (0.1, 0.2, 0.4, 1.0)]
        [1, 3, 6, 14]
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if n_cases < 1:
        raise ValueError(f"n_cases must be >= 1, got {n_cases}")
    return max(1, min(n_cases, math.floor(fraction * n_cases + 0.5)))


def label_fraction_subset(case_ids: Iterable[str], fraction: float, seed: int) -> list[str]:
    """The first :func:`fraction_count` cases of :func:`seeded_order`.

    Args:
        case_ids: the training split's case ids.
        fraction: share of labeled cases in (0, 1].
        seed: subset seed (one per dataset, shared by all fractions and methods).

    Returns:
        the chosen case ids in permutation order; for ``f1 <= f2`` the subset of
        ``f1`` is a prefix of the subset of ``f2``.
    """
    order = seeded_order(case_ids, seed)
    if not order:
        raise ValueError("the training split has no cases")
    return order[: fraction_count(len(order), fraction)]


def finetune_seeds(fractions: Sequence[float], seeds: Sequence[int],
                   by_fraction: Mapping[float | str, Sequence[int]] | None = None) -> dict[float, list[int]]:
    """The training seeds of each label fraction: ``seeds``, unless ``by_fraction`` names the fraction.

    Few-label runs vary most between seeds (one training case at 10 % of a
    small split), so a study can repeat only those (config key
    ``evaluation.seeds_by_fraction``) instead of tripling every run.

    Args:
        fractions: the label fractions of the study.
        seeds: seeds of every fraction not in ``by_fraction``.
        by_fraction: fraction -> its seeds; keys may be numbers or strings ("0.1").

    Raises:
        ValueError: a key that is not one of ``fractions``, or an empty seed list.

    Example:
        >>> finetune_seeds([0.1, 1.0], [0], {0.1: [0, 1, 2]})
        {0.1: [0, 1, 2], 1.0: [0]}
    """
    chosen = {float(f): [int(s) for s in seeds] for f in fractions}
    for key, extra in (by_fraction or {}).items():
        try:
            fraction = float(key)
        except (TypeError, ValueError):
            raise ValueError(f"seeds_by_fraction: {key!r} is not a number") from None
        if fraction not in chosen:
            raise ValueError(f"seeds_by_fraction: {key!r} is not one of the label fractions {sorted(chosen)}")
        if not extra:
            raise ValueError(f"seeds_by_fraction: fraction {key!r} has no seeds")
        chosen[fraction] = [int(s) for s in extra]
    return chosen
