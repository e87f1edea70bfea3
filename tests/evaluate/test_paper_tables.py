"""Paper-shaped tables: values come from the aggregate tables, published numbers from config/published.csv."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mass_core.evaluate.paper_tables import paper_tables, read_published

REPO = Path(__file__).resolve().parents[2]


def _aggregate_tables(folder: Path) -> None:
    folder.mkdir()
    pd.DataFrame({"dataset": ["bcv", "bcv", "kits", "kits"], "method": ["mass", "mim", "mass", "mim"], "k": [1, 1, 1, 1],
                  "dice_mean": [0.60, 0.20, 0.40, 0.30], "dice_std": [0.02, np.nan, 0.04, 0.01], "n_seeds": [3, 1, 3, 3]}
                 ).to_parquet(folder / "fewshot_dice.parquet")
    pd.DataFrame({"dataset": ["bcv", "bcv"], "method": ["mass", "scratch"], "budget": ["cases_1", "cases_1"],
                  "label_cases": [1, 1], "fraction": [0.04, 0.04], "dice_mean": [0.70, 0.30], "dice_std": [0.01, 0.05],
                  "n_seeds": [3, 3]}).to_parquet(folder / "segmentation_dice.parquet")
    pd.DataFrame({"dataset": ["rsna_ich"], "method": ["mass"], "pooling": ["attention"], "auroc_mean": [0.75], "auroc_std": [0.01],
                  "accuracy_mean": [0.7], "accuracy_std": [0.02], "balanced_accuracy_mean": [0.68], "balanced_accuracy_std": [0.03],
                  "n_seeds": [3]}).to_parquet(folder / "classification_auc.parquet")


def test_paper_tables_line_up_ours_with_the_published_numbers(tmp_path):
    _aggregate_tables(tmp_path / "tables")
    tables = paper_tables(tmp_path / "tables", REPO / "config" / "published.csv", ["scratch", "mim", "mass"])
    few = tables["paper_fewshot"].set_index(["dataset", "method"])
    assert few.loc[("bcv", "mass"), "mean"] == pytest.approx(60.0)
    assert few.loc[("bcv", "mass"), "published"] == pytest.approx(65.5)
    assert np.isnan(few.loc[("kits", "mass"), "published"])
    seg = tables["paper_finetune"].set_index(["dataset", "method"])
    assert seg.loc[("bcv", "scratch"), "published"] == pytest.approx(27.3) and seg.loc[("bcv", "scratch"), "std"] == pytest.approx(5.0)
    auc = tables["paper_classification"].query("metric == 'auroc'").set_index("method")
    assert auc.loc["mass", "published"] == pytest.approx(75.4)
    markdown = (tmp_path / "tables" / "paper_fewshot.md").read_text()
    # Rows in method order; the mean over datasets (60 and 40 -> 50.0).
    assert markdown.index("| mim |") < markdown.index("| mass |")
    assert "| mass | 60.0 ± 2.0 (65.5) | 40.0 ± 4.0 | 50.0 |" in markdown
    assert "| mim | 20.0 | 30.0 ± 1.0 | 25.0 |" in markdown
    assert pd.read_csv(tmp_path / "tables" / "paper_finetune.csv").shape == (2, 8)


def test_published_table_is_checked(tmp_path):
    published = read_published(REPO / "config" / "published.csv")
    assert set(published["table"]) == {"fewshot", "finetune", "classification"}
    (tmp_path / "p.csv").write_text("table,dataset,method,setting,metric,value,source\nfewshots,bcv,mass,k=1,dice,1,x\n")
    with pytest.raises(ValueError, match="unknown table names"):
        read_published(tmp_path / "p.csv")
    (tmp_path / "p.csv").write_text("table,dataset,method,setting,metric,value,source\n" + "fewshot,bcv,mass,k=1,dice,1,x\n" * 2)
    with pytest.raises(ValueError, match="repeated rows"):
        read_published(tmp_path / "p.csv")
