from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mass_core.evaluate.aggregate import TABLES, aggregate, format_cell, markdown_table

METHODS = ["scratch", "mim", "mass"]


def finetune_rows(method: str, fraction: float, seed: int, dice: tuple[float, float], hd95: tuple[float, float]) -> pd.DataFrame:
    """Two test cases x two classes; class 2 is absent from case b (NaN, not counted)."""
    rows = [
        ("a", 1, dice[0], hd95[0]), ("b", 1, dice[0], hd95[0]),
        ("a", 2, dice[1], hd95[1]), ("b", 2, math.nan, math.nan),
    ]
    return pd.DataFrame([{"dataset": "phantom", "method": method, "fraction": fraction, "seed": seed, "case_id": c,
                          "class_id": k, "dice": d, "hd95_mm": h, "truth_voxels": 10, "pred_voxels": 10} for c, k, d, h in rows])


@pytest.fixture
def metric_files(tmp_path: Path) -> dict[str, list[Path]]:
    files: dict[str, list[Path]] = {"finetune": [], "fewshot": [], "probe": []}
    runs = [("scratch", 0.1, 0, (0.2, 0.4), (10.0, 20.0)), ("scratch", 0.1, 1, (0.4, 0.6), (8.0, 12.0)),
            ("mass", 0.1, 0, (0.6, 0.8), (4.0, 6.0)), ("mass", 0.1, 1, (0.8, 0.8), (2.0, 4.0)),
            ("scratch", 1.0, 0, (0.9, 0.9), (1.0, 1.0)), ("mass", 1.0, 0, (0.9, 0.9), (1.0, 2.0))]
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
    dice = tables["segmentation_dice"].set_index(["method", "fraction"])
    # scratch @ 0.1: seed 0 -> mean(0.2, 0.4) = 0.3; seed 1 -> mean(0.4, 0.6) = 0.5 (class 2 only from case a).
    assert dice.loc[("scratch", 0.1), "dice_mean"] == pytest.approx(0.4)
    assert dice.loc[("scratch", 0.1), "dice_std"] == pytest.approx(np.std([0.3, 0.5], ddof=1))
    assert dice.loc[("scratch", 0.1), "n_seeds"] == 2
    assert math.isnan(dice.loc[("mass", 1.0), "dice_std"])
    hd = tables["segmentation_hd95"].set_index(["method", "fraction"])
    assert hd.loc[("mass", 0.1), "hd95_mm_mean"] == pytest.approx(np.mean([5.0, 3.0]))
    per_class = tables["segmentation_per_class"].set_index(["method", "fraction", "class_id"])
    assert per_class.loc[("mass", 0.1, 2), "dice_mean"] == pytest.approx(0.8)
    assert per_class.loc[("mass", 0.1, 2), "dice_std"] == pytest.approx(0.0)
    # Rows follow the configured method order, then fraction.
    assert list(tables["segmentation_dice"]["method"]) == ["scratch", "scratch", "mass", "mass"]
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
    assert "| method | 10% | 100% |" in dice_md
    assert "| scratch | 40.0 ± 14.1 | **90.0** |" in dice_md
    assert "| mass | **75.0 ± 7.1** | **90.0** |" in dice_md  # a tie is bold in both rows
    hd_md = (tmp_path / "segmentation_hd95.md").read_text()
    assert "| mass | **4.0 ± 1.4** | **1.5** |" not in hd_md  # lower is better: 1.0 (scratch) wins at 100%
    assert "| scratch | 12.5 ± 3.5 | **1.0** |" in hd_md and "| mass | **4.0 ± 1.4** | 1.5 |" in hd_md
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
    table = pd.DataFrame({"method": ["zzz", "mass"], "fraction": [0.1, 0.1], "dice_mean": [0.5, 0.6], "dice_std": [math.nan] * 2})
    text = markdown_table(table, "method", "fraction", "dice", higher_is_better=True, scale=100, decimals=1,
                          column_label=str, row_order=["mass"])
    assert text.index("| mass |") < text.index("| zzz |")


def test_per_class_tables_name_the_classes(metric_files, tmp_path):
    tables = aggregate(metric_files["finetune"], metric_files["fewshot"], metric_files["probe"], tmp_path, METHODS,
                       class_names={"phantom": {1: "liver"}})
    per_class = tables["segmentation_per_class"]
    assert dict(zip(per_class["class_id"], per_class["class_name"])) == {1: "liver", 2: "class 2"}
    assert "| method | liver | class 2 |" in (tmp_path / "segmentation_per_class.md").read_text()
    assert "| method | liver |" in (tmp_path / "fewshot_per_class.md").read_text()
