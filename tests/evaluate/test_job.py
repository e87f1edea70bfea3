from __future__ import annotations

import json
import math

import pandas as pd

from mass_core.evaluate.job import finite, start_job

FILES = {"metrics": "metrics.parquet", "summary": "summary.json"}


def test_a_job_unmarks_its_folder_before_anything_else(tmp_path):
    (tmp_path / "summary.json").write_text('{"test_dice": 0.9}')
    (tmp_path / "metrics.parquet").write_text("old")
    (tmp_path / "notes.txt").write_text("the user's")
    job = start_job(tmp_path, FILES, "summary", threads=None, device="cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"] and job.device.type == "cpu"
    job.write_table("metrics", pd.DataFrame({"dice": [0.5]}))
    written = job.write_summary({"test_dice": math.nan, "per_class": [0.5, math.inf]})
    stored = json.loads((tmp_path / "summary.json").read_text())
    # JSON has no NaN: what is written and what is returned say null, with the device and timings added.
    assert stored == written and stored["test_dice"] is None and stored["per_class"] == [0.5, None]
    assert stored["device"] == "cpu" and stored["total_seconds"] >= 0 and stored["cpu_seconds"] >= 0
    assert pd.read_parquet(tmp_path / "metrics.parquet")["dice"].tolist() == [0.5]


def test_finite_leaves_finite_values_alone():
    value = {"a": [1.0, 2, "x", None], "b": {"c": -0.0}}
    assert finite(value) == value
