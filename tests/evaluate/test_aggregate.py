from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mass_core.evaluate.aggregate import TABLES, aggregate, format_cell, format_difference, markdown_table
from mass_core.evaluate.statistics import paired_bootstrap

METHODS = ["scratch", "mim", "mass"]
# Labeled cases of each budget on a train split of 20 cases.
LABEL_CASES = {"cases_2": 2, "cases_10": 10, "fraction_0.1": 2, "fraction_1": 20}


def run_rows(method: str, budget: str, seed: int, cases: dict[str, tuple[float, float]],
             hd95: tuple[float, float] = (1.0, 1.0)) -> pd.DataFrame:
    """``metrics.parquet`` of one finetuning run: test case -> Dice of classes 1 and 2 (NaN: class absent)."""
    return pd.DataFrame([{"dataset": "phantom", "method": method, "budget": budget, "label_cases": LABEL_CASES[budget],
                          "fraction": LABEL_CASES[budget] / 20, "seed": seed, "case_id": case, "class_id": k, "dice": d,
                          "hd95_mm": math.nan if math.isnan(d) else h, "truth_voxels": 10, "pred_voxels": 10}
                         for case, dice in cases.items() for k, d, h in zip((1, 2), dice, hd95)])


def finetune_rows(method: str, budget: str, seed: int, dice: tuple[float, float], hd95: tuple[float, float]) -> pd.DataFrame:
    """Two test cases x two classes; class 2 is absent from case b (NaN, not counted)."""
    return run_rows(method, budget, seed, {"a": dice, "b": (dice[0], math.nan)}, hd95)


@pytest.fixture
def metric_files(tmp_path: Path) -> dict[str, list[Path]]:
    files: dict[str, list[Path]] = {"finetune": [], "fewshot": [], "probe": []}
    runs = [("scratch", "fraction_0.1", 0, (0.2, 0.4), (10.0, 20.0)), ("scratch", "fraction_0.1", 1, (0.4, 0.6), (8.0, 12.0)),
            ("mass", "fraction_0.1", 0, (0.6, 0.8), (4.0, 6.0)), ("mass", "fraction_0.1", 1, (0.8, 0.8), (2.0, 4.0)),
            ("scratch", "fraction_1", 0, (0.9, 0.9), (1.0, 1.0)), ("mass", "fraction_1", 0, (0.9, 0.9), (1.0, 2.0)),
            ("scratch", "cases_10", 0, (0.8, 0.8), (1.0, 1.0)), ("mass", "cases_2", 0, (0.5, 0.5), (1.0, 1.0))]
    for i, run in enumerate(runs):
        path = tmp_path / f"ft{i}.parquet"
        finetune_rows(*run).to_parquet(path)
        files["finetune"].append(path)
    for k in (1, 3):
        path = tmp_path / f"fs{k}.parquet"
        pd.DataFrame([{"dataset": "phantom", "method": "mass", "k": k, "seed": 0, "case_id": "a", "class_id": c,
                       "dice": 0.1 * k + 0.1 * c, "hd95_mm": 5.0, "truth_voxels": 1, "pred_voxels": 1} for c in (1, 7)]).to_parquet(path)
        files["fewshot"].append(path)
    for method, auroc in (("scratch", 0.5), ("mass", 0.75)):
        path = tmp_path / f"probe_{method}.parquet"
        pd.DataFrame([{"dataset": "phantom", "method": method, "seed": 0, "pooling": "avg", "auroc": auroc, "accuracy": 0.5,
                       "balanced_accuracy": 0.5, "regularization": 1.0, "n_train": 4, "n_val": 2, "n_test": 2, "note": "", "seconds": 1.0}]).to_parquet(path)
        files["probe"].append(path)
    return files


def test_mean_and_std_over_seeds(metric_files, tmp_path):
    tables = aggregate(metric_files["finetune"], metric_files["fewshot"], metric_files["probe"], tmp_path / "tables", METHODS)
    dice = tables["segmentation_dice"].set_index(["method", "budget"])
    # scratch @ 10%: seed 0 -> mean(0.2, 0.4) = 0.3; seed 1 -> mean(0.4, 0.6) = 0.5 (class 2 only from case a).
    assert dice.loc[("scratch", "fraction_0.1"), "dice_mean"] == pytest.approx(0.4)
    assert dice.loc[("scratch", "fraction_0.1"), "dice_std"] == pytest.approx(np.std([0.3, 0.5], ddof=1))
    assert dice.loc[("scratch", "fraction_0.1"), "n_seeds"] == 2
    assert (dice.loc[("scratch", "fraction_0.1"), "label_cases"], dice.loc[("scratch", "fraction_0.1"), "fraction"]) == (2, 0.1)
    assert (dice.loc[("mass", "fraction_1"), "label_cases"], dice.loc[("mass", "fraction_1"), "fraction"]) == (20, 1.0)
    assert math.isnan(dice.loc[("mass", "fraction_1"), "dice_std"])
    hd = tables["segmentation_hd95"].set_index(["method", "budget"])
    assert hd.loc[("mass", "fraction_0.1"), "hd95_mm_mean"] == pytest.approx(np.mean([5.0, 3.0]))
    per_class = tables["segmentation_per_class"].set_index(["method", "budget", "class_id"])
    assert per_class.loc[("mass", "fraction_0.1", 2), "dice_mean"] == pytest.approx(0.8)
    assert per_class.loc[("mass", "fraction_0.1", 2), "dice_std"] == pytest.approx(0.0)
    # Rows follow the configured method order, then the budget order: counts ascending (10 after 2), then fractions.
    rows = list(zip(tables["segmentation_dice"]["method"], tables["segmentation_dice"]["budget"]))
    assert rows == [("scratch", "cases_10"), ("scratch", "fraction_0.1"), ("scratch", "fraction_1"),
                    ("mass", "cases_2"), ("mass", "fraction_0.1"), ("mass", "fraction_1")]
    few = tables["fewshot_dice"].set_index("k")
    assert few.loc[3, "dice_mean"] == pytest.approx(np.mean([0.4, 1.0]))
    auc = tables["classification_auc"].set_index("method")
    assert auc.loc["mass", "auroc_mean"] == 0.75


def test_rerun_is_byte_identical(metric_files, tmp_path):
    aggregate(metric_files["finetune"], metric_files["fewshot"], metric_files["probe"], tmp_path / "a", METHODS)
    # Input order must not matter either.
    aggregate(metric_files["finetune"][::-1], metric_files["fewshot"][::-1], metric_files["probe"][::-1], tmp_path / "b", METHODS)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(f"{t}.{ext}" for t in TABLES for ext in ("parquet", "csv", "md"))
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_markdown_bolds_the_best(metric_files, tmp_path):
    aggregate(metric_files["finetune"], metric_files["fewshot"], metric_files["probe"], tmp_path, METHODS)
    dice_md = (tmp_path / "segmentation_dice.md").read_text()
    # Columns in budget order with human labels (a lexicographic order would put "cases_10" first).
    assert "| method | 2 cases | 10 cases | 10% | 100% |" in dice_md
    assert "| scratch | – | **80.0** | 40.0 ± 14.1 | **90.0** |" in dice_md
    assert "| mass | **50.0** | – | **75.0 ± 7.1** | **90.0** |" in dice_md  # a tie is bold in both rows
    hd_md = (tmp_path / "segmentation_hd95.md").read_text()
    # Lower is better: 1.0 (scratch) wins at 100%.
    assert "| scratch | – | **1.0** | 12.5 ± 3.5 | **1.0** |" in hd_md and "| mass | **1.0** | – | **4.0 ± 1.4** | 1.5 |" in hd_md
    per_class_md = (tmp_path / "segmentation_per_class.md").read_text()
    headings = [line for line in per_class_md.splitlines() if line.startswith("## ")]
    assert headings == ["## phantom, labels: 2 cases (seeds: 1)", "## phantom, labels: 10 cases (seeds: 1)",
                        "## phantom, labels: 10% (seeds: 2)", "## phantom, labels: 100% (seeds: 1)"]
    auc_md = (tmp_path / "classification_auc.md").read_text()
    assert "| mass | **75.0** | **50.0** | **50.0** |" in auc_md


def test_empty_inputs_give_empty_tables(tmp_path):
    tables = aggregate([], [], [], tmp_path, METHODS)
    assert all(t.empty for t in tables.values())
    assert "_No results._" in (tmp_path / "fewshot_dice.md").read_text()


@pytest.mark.parametrize("mean, std, expected", [(0.7512, 0.0123, "75.1 ± 1.2"), (0.7512, math.nan, "75.1"), (math.nan, math.nan, "–")])
def test_format_cell(mean, std, expected):
    assert format_cell(mean, std, 100, 1) == expected


def test_markdown_table_unknown_methods_go_last():
    table = pd.DataFrame({"method": ["zzz", "mass"], "budget": ["fraction_0.1"] * 2, "dice_mean": [0.5, 0.6], "dice_std": [math.nan] * 2})
    text = markdown_table(table, "method", "budget", "dice", higher_is_better=True, scale=100, decimals=1,
                          column_label=str, row_order=["mass"])
    assert text.index("| mass |") < text.index("| zzz |")


def test_per_class_tables_name_the_classes(metric_files, tmp_path):
    tables = aggregate(metric_files["finetune"], metric_files["fewshot"], metric_files["probe"], tmp_path, METHODS,
                       class_names={"phantom": {1: "liver"}})
    per_class = tables["segmentation_per_class"]
    assert dict(zip(per_class["class_id"], per_class["class_name"])) == {1: "liver", 2: "class 2"}
    assert "| method | liver | class 2 |" in (tmp_path / "segmentation_per_class.md").read_text()
    assert "| method | liver |" in (tmp_path / "fewshot_per_class.md").read_text()


def test_paired_difference_to_scratch_by_hand(tmp_path):
    # Two seeds x three test cases; class 2 is absent from case c, so a case's Dice there is its class-1 Dice.
    scratch = {0: {"a": (0.5, 0.7), "b": (0.4, 0.4), "c": (0.3, math.nan)},
               1: {"a": (0.6, 0.6), "b": (0.5, 0.3), "c": (0.2, math.nan)}}
    mass = {0: {"a": (0.7, 0.9), "b": (0.5, 0.5), "c": (0.4, math.nan)},
            1: {"a": (0.7, 0.7), "b": (0.6, 0.4), "c": (0.5, math.nan)}}
    frames = [run_rows("scratch", "cases_2", s, cases) for s, cases in scratch.items()]
    frames += [run_rows("mass", "cases_2", s, cases) for s, cases in mass.items()]
    # mim is scratch plus 0.05 on every class of every case: the interval is that point.
    frames += [run_rows("mim", "cases_2", s, {c: tuple(d + 0.05 for d in dice) for c, dice in cases.items()}) for s, cases in scratch.items()]
    paths = []
    for i, frame in enumerate(frames):
        paths.append(tmp_path / f"run{i}.parquet")
        frame.to_parquet(paths[-1])
    table = aggregate(paths, [], [], tmp_path / "tables", METHODS)["segmentation_vs_scratch"]
    assert list(table.columns) == ["dataset", "method", "budget", "label_cases", "diff_mean", "ci_low", "ci_high", "n_seeds", "n_cases"]
    assert list(table["method"]) == ["mim", "mass"]
    mim, result = table.iloc[0], table.iloc[1]
    assert (mim["diff_mean"], mim["ci_low"], mim["ci_high"]) == pytest.approx((0.05, 0.05, 0.05))
    # Case Dice differences: seed 0 a, b, c = 0.8-0.6, 0.5-0.4, 0.4-0.3; seed 1 = 0.7-0.6, 0.5-0.4, 0.5-0.2.
    differences = {(0, "a"): 0.2, (0, "b"): 0.1, (0, "c"): 0.1, (1, "a"): 0.1, (1, "b"): 0.1, (1, "c"): 0.3}
    assert result["diff_mean"] == pytest.approx(0.9 / 6)
    assert (result["label_cases"], result["n_seeds"], result["n_cases"]) == (2, 2, 3)
    # Every resampled mean lies between the smallest and largest difference.
    assert 0.1 - 1e-9 <= result["ci_low"] < result["diff_mean"] < result["ci_high"] <= 0.3 + 1e-9
    expected = paired_bootstrap(pd.DataFrame([{"k": 0, "seed": s, "case_id": c, "d": d} for (s, c), d in differences.items()]), ["k"], "d")
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((expected["ci_low"].iloc[0], expected["ci_high"].iloc[0]))
    markdown = (tmp_path / "tables" / "segmentation_vs_scratch.md").read_text()
    assert "paired hierarchical bootstrap over seeds and test cases, 95 % percentile interval" in markdown
    assert "| method | 2 cases |" in markdown and "| scratch |" not in markdown
    assert "| mim | **+5.0 [+5.0, +5.0]** |" in markdown
    assert f"| mass | **+15.0 [{result['ci_low'] * 100:+.1f}, {result['ci_high'] * 100:+.1f}]** |" in markdown


@pytest.mark.parametrize("mean, low, high, expected", [(0.042, 0.01, 0.075, "**+4.2 [+1.0, +7.5]**"),
                                                       (0.01, -0.02, 0.04, "+1.0 [-2.0, +4.0]"),
                                                       (-0.05, -0.08, -0.01, "**-5.0 [-8.0, -1.0]**"),
                                                       (0.1, 1e-17, 0.2, "+10.0 [+0.0, +20.0]")])
def test_format_difference(mean, low, high, expected):
    assert format_difference(mean, low, high, 100, 1) == expected


def test_runs_of_one_budget_must_agree_on_their_size(tmp_path):
    paths = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    run_rows("scratch", "cases_2", 0, {"a": (0.5, 0.5)}).to_parquet(paths[0])
    run_rows("mass", "cases_2", 0, {"a": (0.5, 0.5)}).assign(label_cases=3).to_parquet(paths[1])
    with pytest.raises(ValueError, match="phantom/cases_2"):
        aggregate(paths, [], [], tmp_path / "tables", METHODS)
