from __future__ import annotations

import pytest

from mass_core.evaluate.subsets import Budget, finetune_seeds, fraction_count, seeded_order, study_budgets

IDS = [f"case_{i:03d}" for i in range(14)]
FRACTIONS = [0.05, 0.1, 0.2, 0.4, 0.7, 1.0]


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_subsets_are_nested(seed):
    subsets = [Budget("fraction", f).subset(IDS, seed) for f in FRACTIONS]
    for small, large in zip(subsets, subsets[1:]):
        assert large[: len(small)] == small
    assert sorted(subsets[-1]) == IDS


@pytest.mark.parametrize("seed", [0, 3])
def test_count_and_fraction_budgets_are_prefixes_of_one_order(seed):
    order = seeded_order(IDS, seed)
    one, five, forty = (Budget.parse(t).subset(IDS, seed) for t in ("cases_1", "cases_5", "fraction_0.4"))
    assert one == order[:1] and five == order[:5] and forty == order[:6]
    assert forty[:1] == one and forty[:5] == five
    # 10% of 14 cases rounds to one case: the same case as the 1-case budget.
    assert Budget("fraction", 0.1).subset(IDS, seed) == one


def test_subsets_are_deterministic_and_ignore_input_order():
    # Methods and training seeds call this with the same ids and subset seed: they get the same cases.
    for budget in (Budget("fraction", 0.4), Budget("cases", 3)):
        assert budget.subset(IDS, 3) == budget.subset(list(reversed(IDS)), 3)
    assert seeded_order(IDS, 0) != seeded_order(IDS, 1)


@pytest.mark.parametrize("token, kind, value, label", [
    ("fraction_0.1", "fraction", 0.1, "10%"), ("fraction_1", "fraction", 1.0, "100%"), ("fraction_0.05", "fraction", 0.05, "5%"),
    ("cases_1", "cases", 1, "1 case"), ("cases_30", "cases", 30, "30 cases"),
])
def test_budget_token_round_trip(token, kind, value, label):
    budget = Budget.parse(token)
    assert (budget.kind, budget.value, budget.label, budget.token) == (kind, value, label, token)
    assert Budget(kind, value) == budget and hash(Budget(kind, value)) == hash(budget)


def test_fraction_one_renders_as_today():
    assert Budget("fraction", 1.0).token == Budget("fraction", 1).token == "fraction_1"


def test_budgets_sort_counts_first():
    tokens = ["fraction_1", "cases_10", "fraction_0.1", "cases_2", "fraction_0.4"]
    assert sorted(tokens, key=lambda t: Budget.parse(t).sort_key) == ["cases_2", "cases_10", "fraction_0.1", "fraction_0.4", "fraction_1"]
    assert [b.token for b in study_budgets([1.0, 0.1], [10, 2])] == ["cases_2", "cases_10", "fraction_0.1", "fraction_1"]


def test_too_many_cases_names_budget_and_split_size():
    with pytest.raises(ValueError, match=r"cases_15: 15 cases .* the train split has 14"):
        Budget("cases", 15).subset(IDS, 0)
    assert Budget("cases", 14).subset(IDS, 0) == seeded_order(IDS, 0)


@pytest.mark.parametrize("token", ["fraction_0", "fraction_1.5", "cases_0", "cases_1.5", "cases_", "shots_5", "0.1"])
def test_bad_budget_tokens(token):
    with pytest.raises(ValueError, match="label budget"):
        Budget.parse(token)


@pytest.mark.parametrize("kind, value", [("cases", 2.5), ("cases", True), ("fraction", 0.0), ("shots", 1)])
def test_bad_budgets(kind, value):
    with pytest.raises(ValueError, match="budget"):
        Budget(kind, value)


def test_study_needs_a_budget():
    with pytest.raises(ValueError, match="label_fractions and label_counts are both empty"):
        study_budgets([], [])


@pytest.mark.parametrize("n, fraction, expected", [(14, 0.1, 1), (14, 0.2, 3), (14, 0.4, 6), (14, 1.0, 14), (3, 0.01, 1), (10, 0.25, 3)])
def test_fraction_count(n, fraction, expected):
    assert fraction_count(n, fraction) == expected
    assert Budget("fraction", fraction).n_cases(n) == expected


def test_bad_ids():
    with pytest.raises(ValueError, match="unique"):
        seeded_order(["a", "a"], 0)
    with pytest.raises(ValueError, match="no cases"):
        Budget("fraction", 0.5).subset([], 0)


def test_finetune_seeds_override_named_budgets_only():
    tenth, forty, whole, one = Budget("fraction", 0.1), Budget("fraction", 0.4), Budget("fraction", 1.0), Budget("cases", 1)
    # YAML gives number keys, --config on the command line may give strings.
    for key in (0.1, "0.1"):
        assert finetune_seeds([tenth, forty, whole], [5], {key: [0, 1, 2]}) == {tenth: [0, 1, 2], forty: [5], whole: [5]}
    for key in (1, "1"):
        assert finetune_seeds([one, tenth], [5], by_count={key: [0, 1]}) == {one: [0, 1], tenth: [5]}
    assert finetune_seeds([one, tenth], [0], {0.1: [2]}, {1: [3, 4]}) == {one: [3, 4], tenth: [2]}
    # The key 1 names cases_1 under seeds_by_count and fraction_1 under seeds_by_fraction.
    assert finetune_seeds([one, whole], [5], by_count={1: [0]}) == {one: [0], whole: [5]}
    assert finetune_seeds([one, whole], [5], {1: [0]}) == {one: [5], whole: [0]}


@pytest.mark.parametrize("by_fraction, by_count, match", [
    ({0.3: [0]}, None, "seeds_by_fraction: 0.3 is not one of the study's fraction budgets"),
    ({"ten": [0]}, None, "'ten' is not a valid fraction budget"),
    ({0.1: []}, None, "no seeds"),
    (None, {2: [0]}, r"seeds_by_count: 2 is not one of the study's cases budgets \[1\]"),
    (None, {1.5: [0]}, "not a valid cases budget"),
])
def test_finetune_seeds_reject_bad_keys(by_fraction, by_count, match):
    with pytest.raises(ValueError, match=match):
        finetune_seeds([Budget("cases", 1), Budget("fraction", 0.1)], [7], by_fraction, by_count)
