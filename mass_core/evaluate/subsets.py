"""Label budgets of a training split: nested and deterministic subsets.

A budget is a share of the train split (``fraction_0.1``) or a number of
train cases (``cases_5``). Every budget of one dataset, of either kind, takes
a prefix of the same seeded permutation of the (sorted) training case ids, so
the 1-case subset is inside the 10% one, which is inside the 40% one, and so
on: a larger budget only adds labels, and differences between budgets are
never due to a different draw of cases. The permutation depends on the case
ids and the seed only, not on the order in which cases are listed.

:func:`finetune_seeds` says which training seeds each budget is finetuned
with, so that the noisiest (fewest-label) budgets can be repeated alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Literal, Mapping, Sequence

import numpy as np

__all__ = ["Budget", "fraction_count", "finetune_seeds", "seeded_order", "study_budgets"]

# Also the sort order of budgets: counts (few-shot budgets) before fractions.
_KINDS = ("cases", "fraction")


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


@dataclass(frozen=True)
class Budget:
    """A finetuning label budget: a share of the train split or a number of train cases.

    Args:
        kind: ``"fraction"`` (``value`` in (0, 1]) or ``"cases"`` (``value`` an integer >= 1).
        value: the share or the count.

    Example:
        >>> Budget.parse("cases_5").label, Budget("fraction", 1.0).token
        ('5 cases', 'fraction_1')
    """

    kind: Literal["fraction", "cases"]
    value: float | int

    def __post_init__(self) -> None:
        if self.kind == "fraction":
            if not 0 < float(self.value) <= 1:
                raise ValueError(f"a fraction budget must be in (0, 1], got {self.value}")
            object.__setattr__(self, "value", float(self.value))
        elif self.kind == "cases":
            if isinstance(self.value, bool) or not float(self.value).is_integer() or self.value < 1:
                raise ValueError(f"a case-count budget must be an integer >= 1, got {self.value!r}")
            object.__setattr__(self, "value", int(self.value))
        else:
            raise ValueError(f"budget kind must be one of {_KINDS}, got {self.kind!r}")

    @classmethod
    def parse(cls, token: str) -> Budget:
        """The budget of a path token: ``"fraction_0.1"`` or ``"cases_5"``."""
        kind, _, number = str(token).partition("_")
        try:
            if kind == "fraction":
                return cls("fraction", float(number))
            if kind == "cases":
                return cls("cases", int(number))
        except ValueError as error:
            raise ValueError(f"label budget {token!r}: {error}") from None
        raise ValueError(f"label budget {token!r} is neither 'fraction_<share>' nor 'cases_<count>'")

    @property
    def token(self) -> str:
        """Path component: ``fraction_0.1``, ``fraction_1`` (1.0), ``cases_5``."""
        return f"{self.kind}_{self.value:g}" if self.kind == "fraction" else f"cases_{self.value}"

    @property
    def label(self) -> str:
        """Human label: ``10%``, ``1 case``, ``5 cases``."""
        if self.kind == "fraction":
            return f"{self.value * 100:g}%"
        return f"{self.value} case" if self.value == 1 else f"{self.value} cases"

    @property
    def sort_key(self) -> tuple[int, float]:
        """Counts ascending, then fractions ascending.

        Which of ``cases_30`` and ``fraction_0.1`` holds more cases depends on
        the dataset; count budgets are the few-shot end of a study, so they come first.
        """
        return _KINDS.index(self.kind), self.value

    def n_cases(self, n_train: int) -> int:
        """Number of train cases the budget takes from a split of ``n_train``.

        Raises:
            ValueError: a count larger than the split.
        """
        if self.kind == "fraction":
            return fraction_count(n_train, self.value)
        if self.value > n_train:
            raise ValueError(f"label budget {self.token}: {self.value} cases asked for, "
                             f"but the train split has {n_train}")
        return int(self.value)

    def subset(self, case_ids: Iterable[str], seed: int) -> list[str]:
        """The first :meth:`n_cases` cases of :func:`seeded_order`.

        Args:
            case_ids: the training split's case ids.
            seed: subset seed (one per dataset, shared by all budgets and methods).

        Returns:
            the chosen case ids in permutation order; the subset of a smaller
            budget is a prefix of the subset of a larger one, of either kind.
        """
        order = seeded_order(case_ids, seed)
        if not order:
            raise ValueError("the training split has no cases")
        return order[: self.n_cases(len(order))]


def study_budgets(fractions: Iterable[float], counts: Iterable[int]) -> list[Budget]:
    """The budgets of config ``evaluation.label_fractions`` and ``label_counts``, in :attr:`Budget.sort_key` order.

    Raises:
        ValueError: both lists empty.
    """
    budgets = {Budget("fraction", f) for f in fractions} | {Budget("cases", n) for n in counts}
    if not budgets:
        raise ValueError("evaluation: label_fractions and label_counts are both empty; give at least one label budget")
    return sorted(budgets, key=lambda b: b.sort_key)


def finetune_seeds(budgets: Sequence[Budget], seeds: Sequence[int],
                   by_fraction: Mapping[float | str, Sequence[int]] | None = None,
                   by_count: Mapping[int | str, Sequence[int]] | None = None) -> dict[Budget, list[int]]:
    """The training seeds of each budget: ``seeds``, unless ``by_fraction`` or ``by_count`` names the budget.

    Few-label runs vary most between seeds (one training case at 10 % of a
    small split), so a study can repeat only those (config keys
    ``evaluation.seeds_by_fraction`` and ``seeds_by_count``) instead of tripling every run.

    Args:
        budgets: the label budgets of the study.
        seeds: seeds of every budget not overridden.
        by_fraction: label fraction -> its seeds; keys may be numbers or strings ("0.1").
        by_count: number of labeled cases -> its seeds; keys may be numbers or strings ("5").

    Raises:
        ValueError: a key that is not one of ``budgets``, or an empty seed list.

    Example:
        >>> one, tenth = Budget("cases", 1), Budget("fraction", 0.1)
        >>> finetune_seeds([one, tenth], [0], by_count={1: [0, 1, 2]}) == {one: [0, 1, 2], tenth: [0]}
        True
    """
    chosen = {budget: [int(s) for s in seeds] for budget in budgets}
    for kind, name, overrides in (("fraction", "seeds_by_fraction", by_fraction), ("cases", "seeds_by_count", by_count)):
        for key, extra in (overrides or {}).items():
            try:
                budget = Budget(kind, float(key))
            except (TypeError, ValueError):
                raise ValueError(f"{name}: {key!r} is not a valid {kind} budget") from None
            if budget not in chosen:
                known = sorted(b.value for b in chosen if b.kind == kind)
                raise ValueError(f"{name}: {key!r} is not one of the study's {kind} budgets {known}")
            if not extra:
                raise ValueError(f"{name}: {key!r} has no seeds")
            chosen[budget] = [int(s) for s in extra]
    return chosen
