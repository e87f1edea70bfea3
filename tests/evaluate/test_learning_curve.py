from __future__ import annotations

import pandas as pd
import pytest

from mass_core.evaluate.learning_curve import learning_curve


def _fewshot(path, own, swapped):
    rows = [{"dataset": "d", "method": "mass", "k": 1, "seed": 0, "references": refs, "case_id": case, "class_id": c, "dice": value}
            for refs, values in (("own", own), ("swapped", swapped)) for case in ("a", "b") for c, value in zip((1, 2), values)]
    pd.DataFrame(rows).to_parquet(path)
    return path


def _finetune(path, seed, dice):
    pd.DataFrame([{"dataset": "d", "method": "mass", "seed": seed, "case_id": case, "class_id": c, "dice": dice}
                  for case in ("a", "b") for c in (1, 2)]).to_parquet(path)
    return path


def test_rows_per_step_with_gap_and_seed_spread(tmp_path):
    fewshot = {100: [_fewshot(tmp_path / "f100.parquet", (0.2, 0.4), (0.1, 0.1))], 400: [_fewshot(tmp_path / "f400.parquet", (0.6, 0.8), (0.1, 0.3))]}
    finetune = {100: [_finetune(tmp_path / "t100_0.parquet", 0, 0.3), _finetune(tmp_path / "t100_1.parquet", 1, 0.5)],
                400: [_finetune(tmp_path / "t400_0.parquet", 0, 0.7)]}
    table = learning_curve(fewshot, finetune, tmp_path / "tables" / "learning_curve.parquet", tmp_path / "curve.png", label_count=1)
    assert table["step"].tolist() == [100, 400]
    first, last = table.iloc[0], table.iloc[1]
    assert first["incontext_dice"] == pytest.approx(0.3) and first["swapped_dice"] == pytest.approx(0.1)
    assert first["swap_gap"] == pytest.approx(0.2) and last["swap_gap"] == pytest.approx(0.5)
    # Seeds 0.3 and 0.5: mean 0.4, sample std 0.1414; one seed has no spread.
    assert first["finetune_dice_mean"] == pytest.approx(0.4) and first["finetune_dice_std"] == pytest.approx(0.1414, abs=1e-4)
    assert last["n_seeds"] == 1 and pd.isna(last["finetune_dice_std"])
    markdown = (tmp_path / "tables" / "learning_curve.md").read_text()
    assert "| 100 | 30.0 | 10.0 | +20.0 | 40.0 ± 14.1 |" in markdown
    assert (tmp_path / "tables" / "learning_curve.csv").is_file() and (tmp_path / "curve.png").stat().st_size > 1000
