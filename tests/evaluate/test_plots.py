from __future__ import annotations

import math

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgb

from mass_core.evaluate.plots import label_efficiency_figure, make_plots


def dice_table() -> pd.DataFrame:
    """Two methods at cases_2, fraction_0.5 (5 of 10 train cases) and fraction_1; scratch has two seeds at the first two."""
    return pd.DataFrame({"dataset": "tiny", "method": ["scratch"] * 3 + ["mass"] * 3,
                         "budget": ["fraction_1", "cases_2", "fraction_0.5"] * 2, "label_cases": [10, 2, 5] * 2,
                         "fraction": [1.0, 0.2, 0.5] * 2, "dice_mean": [0.6, 0.3, 0.4, 0.7, 0.5, 0.6],
                         "dice_std": [math.nan, 0.05, 0.1, 0.01, math.nan, 0.02], "n_seeds": [1, 2, 2, 1, 1, 2]})


def test_label_efficiency_plots_cases_with_a_band_over_seeds():
    ax = label_efficiency_figure(dice_table(), ["scratch", "mass"]).axes[0]
    scratch = ax.get_lines()[0]
    assert scratch.get_label() == "scratch"
    # x = labeled cases, budgets of both kinds in the order of their case counts.
    assert list(scratch.get_xdata()) == [2, 5, 10] and list(scratch.get_ydata()) == [30.0, 40.0, 60.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "5", "10"]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    # scratch: a band from 2 to 5 cases (two seeds at both), none at 10 (one seed).
    assert len(bands) == 2
    x, y = np.concatenate([p.vertices for p in bands[0].get_paths()]).T
    assert (x.min(), x.max(), y.min(), y.max()) == (2, 5, 25.0, 50.0)
    # mass has two seeds at 5 cases only: the band has no width there, an error bar shows the spread.
    assert set(np.concatenate([p.vertices[:, 0] for p in bands[1].get_paths()])) <= {5.0}
    scratch_bars, mass_bars = (c.lines[2][0].get_segments() for c in ax.containers)
    assert scratch_bars == [] and np.allclose(mass_bars, [[[5, 58.0], [5, 62.0]]])


def test_plots_are_deterministic(tiny_dataset, tmp_path):
    few = pd.DataFrame({"dataset": "tiny", "method": "mass", "k": [1, 3], "dice_mean": [0.4, 0.5], "dice_std": [math.nan] * 2, "n_seeds": 1})
    few_class = pd.DataFrame({"dataset": "tiny", "method": "mass", "k": [1, 3, 1, 3], "class_id": [1, 1, 2, 2],
                              "class_name": ["box", "box", "ball", "ball"],
                              "dice_mean": [0.5, 0.6, 0.3, 0.4], "dice_std": [math.nan] * 4, "n_seeds": 1})
    for name, table in (("dice", dice_table()), ("few", few), ("few_class", few_class)):
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
    efficiency = mpimg.imread(tmp_path / "a" / "efficiency.png")[..., :3]
    # One line per method, in the first two colours of matplotlib's cycle.
    for colour in ("C0", "C1"):
        assert np.count_nonzero(np.abs(efficiency - to_rgb(colour)).max(axis=-1) < 0.02) > 100
