from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mass_core.evaluate.plots import make_plots


def test_plots_are_deterministic(tiny_dataset, tmp_path):
    dice = pd.DataFrame({"dataset": "tiny", "method": ["scratch", "scratch", "mass", "mass"], "fraction": [0.5, 1.0] * 2,
                         "dice_mean": [0.3, 0.6, 0.5, 0.7], "dice_std": [0.05, math.nan, 0.02, 0.01], "n_seeds": 2})
    few = pd.DataFrame({"dataset": "tiny", "method": "mass", "k": [1, 3], "dice_mean": [0.4, 0.5], "dice_std": [math.nan] * 2, "n_seeds": 1})
    few_class = pd.DataFrame({"dataset": "tiny", "method": "mass", "k": [1, 3, 1, 3], "class_id": [1, 1, 2, 2],
                              "class_name": ["box", "box", "ball", "ball"],
                              "dice_mean": [0.5, 0.6, 0.3, 0.4], "dice_std": [math.nan] * 4, "n_seeds": 1})
    for name, table in (("dice", dice), ("few", few), ("few_class", few_class)):
        table.to_parquet(tmp_path / f"{name}.parquet")
    test = pd.read_parquet(tiny_dataset).query("split == 'test'")
    predictions = {}
    for method in ("scratch", "mass"):
        predictions[method] = tmp_path / f"{method}.npz"
        np.savez(predictions[method], **{row.case_id: np.load(row.label) for row in test.itertuples()})
    outputs = []
    for run in ("a", "b"):
        out = [tmp_path / run / n for n in ("efficiency.png", "fewshot.png", "examples.png")]
        make_plots(tmp_path / "dice.parquet", tmp_path / "few.parquet", tmp_path / "few_class.parquet", out[0], out[1],
                   {"tiny": {"manifest": tiny_dataset, "predictions": predictions, "title": "test", "out": out[2]}},
                   methods=["scratch", "mass"], novel_classes={"tiny": [2]})
        outputs.append([p.read_bytes() for p in out])
    assert outputs[0] == outputs[1]
    assert all(len(b) > 1000 for b in outputs[0])
