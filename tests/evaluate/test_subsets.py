from __future__ import annotations

import pytest

from mass_core.evaluate.subsets import finetune_seeds, fraction_count, label_fraction_subset, seeded_order

IDS = [f"case_{i:03d}" for i in range(14)]
FRACTIONS = [0.05, 0.1, 0.2, 0.4, 0.7, 1.0]


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_subsets_are_nested(seed):
    subsets = [label_fraction_subset(IDS, f, seed) for f in FRACTIONS]
    for small, large in zip(subsets, subsets[1:]):
        assert large[: len(small)] == small
    assert sorted(subsets[-1]) == IDS


def test_subsets_are_deterministic_and_ignore_input_order():
    assert label_fraction_subset(IDS, 0.4, 3) == label_fraction_subset(list(reversed(IDS)), 0.4, 3)
    assert seeded_order(IDS, 0) != seeded_order(IDS, 1)


@pytest.mark.parametrize("n, fraction, expected", [(14, 0.1, 1), (14, 0.2, 3), (14, 0.4, 6), (14, 1.0, 14), (3, 0.01, 1), (10, 0.25, 3)])
def test_fraction_count(n, fraction, expected):
    assert fraction_count(n, fraction) == expected


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_bad_fraction(fraction):
    with pytest.raises(ValueError, match="fraction"):
        label_fraction_subset(IDS, fraction, 0)


def test_bad_ids():
    with pytest.raises(ValueError, match="unique"):
        seeded_order(["a", "a"], 0)
    with pytest.raises(ValueError, match="no cases"):
        label_fraction_subset([], 0.5, 0)


def test_finetune_seeds_override_named_fractions_only():
    # YAML gives number keys, --config on the command line may give strings.
    for key in (0.1, "0.1"):
        assert finetune_seeds([0.1, 0.4, 1.0], [5], {key: [0, 1, 2]}) == {0.1: [0, 1, 2], 0.4: [5], 1.0: [5]}
    assert finetune_seeds([0.5, 1.0], [0, 1]) == {0.5: [0, 1], 1.0: [0, 1]}


@pytest.mark.parametrize("by_fraction, match", [({0.3: [0]}, "not one of the label fractions"),
                                                ({"ten": [0]}, "not a number"), ({0.1: []}, "no seeds")])
def test_finetune_seeds_reject_bad_keys(by_fraction, match):
    with pytest.raises(ValueError, match=match):
        finetune_seeds([0.1, 1.0], [0], by_fraction)
