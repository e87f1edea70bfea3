"""Tables in the shape of the MASS paper's, beside its published numbers.

The aggregate stage writes one table per evaluation with a section per
dataset. The paper instead shows one few-shot table across datasets, one
finetuning table by label budget and one classification table. These are
built here from the aggregate tables, with a ``published`` column read from
``config/published.csv`` (value, the setting it belongs to and its source),
so that a run on the paper's data lines up with the numbers it should
approach. Published numbers are data, not code: a table row without one
shows ``–``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from mass_core.atomic import write_text, write_with

__all__ = ["PAPER_TABLES", "paper_tables", "read_published"]

PAPER_TABLES = ("paper_fewshot", "paper_finetune", "paper_classification")
PUBLISHED_COLUMNS = ["table", "dataset", "method", "setting", "metric", "value", "source"]
_TABLE_OF = {"paper_fewshot": "fewshot", "paper_finetune": "finetune", "paper_classification": "classification"}
_LONG_COLUMNS = ["dataset", "method", "setting", "metric", "mean", "std", "n_seeds", "published"]


def read_published(path: str | os.PathLike) -> pd.DataFrame:
    """The published numbers: one row per (table, dataset, method, setting, metric), values in %.

    Raises:
        ValueError: a column is missing, a table name is unknown or a row repeats.
    """
    table = pd.read_csv(path, comment="#", dtype={"setting": str})
    missing = [c for c in PUBLISHED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {PUBLISHED_COLUMNS}")
    unknown = sorted(set(table["table"]) - set(_TABLE_OF.values()))
    if unknown:
        raise ValueError(f"{path}: unknown table names {unknown}; expected {sorted(_TABLE_OF.values())}")
    keys = ["table", "dataset", "method", "setting", "metric"]
    repeated = table[table.duplicated(keys)]
    if len(repeated):
        raise ValueError(f"{path}: repeated rows for {repeated[keys].iloc[0].tolist()}")
    return table


def _long(table: pd.DataFrame, setting: pd.Series, metrics: dict[str, str]) -> pd.DataFrame:
    """Aggregate rows as (dataset, method, setting, metric, mean, std, n_seeds), means and stds in %."""
    frames = [
        pd.DataFrame({"dataset": table["dataset"].astype(str), "method": table["method"].astype(str), "setting": setting.astype(str),
                      "metric": metric, "mean": table[f"{column}_mean"] * 100, "std": table[f"{column}_std"] * 100,
                      "n_seeds": table["n_seeds"]})
        for metric, column in metrics.items()
    ]
    return pd.concat(frames, ignore_index=True)


def _with_published(long: pd.DataFrame, published: pd.DataFrame, name: str) -> pd.DataFrame:
    ours = published[published["table"] == _TABLE_OF[name]][["dataset", "method", "setting", "metric", "value"]]
    merged = long.merge(ours.rename(columns={"value": "published"}), on=["dataset", "method", "setting", "metric"], how="left")
    return merged[_LONG_COLUMNS]


def _cell(mean: float, std: float, published: float) -> str:
    text = "–" if np.isnan(mean) else f"{mean:.1f}" + ("" if np.isnan(std) else f" ± {std:.1f}")
    return text + ("" if np.isnan(published) else f" ({published:.1f})")


def _wide_markdown(long: pd.DataFrame, title: str, methods: Sequence[str], note: str) -> str:
    """One Markdown table per (setting, metric): rows methods, columns datasets then their mean."""
    sections = [f"# {title}\n\n{note}\n"]
    for (setting, metric), group in long.groupby(["setting", "metric"], sort=False):
        datasets = list(dict.fromkeys(group["dataset"]))
        cells = group.set_index(["method", "dataset"])
        rows = [m for m in methods if m in set(group["method"])] + sorted(set(group["method"]) - set(methods))
        lines = [f"## {setting}, {metric}\n", "| method | " + " | ".join([*datasets, "mean"]) + " |",
                 "|---" * (len(datasets) + 2) + "|"]
        for method in rows:
            values = [cells.loc[(method, d)] if (method, d) in cells.index else None for d in datasets]
            texts = [_cell(v["mean"], v["std"], v["published"]) if v is not None else "–" for v in values]
            means = [v["mean"] for v in values if v is not None]
            # The mean over datasets is shown only where the method has every dataset.
            overall = f"{np.mean(means):.1f}" if len(means) == len(datasets) and not np.isnan(means).any() else "–"
            lines.append(f"| {method} | " + " | ".join([*texts, overall]) + " |")
        sections.append("\n".join(lines) + "\n")
    return "\n".join(sections)


_NOTE = ("Mean ± sample std over seeds, in %; in brackets the published number for the same setting where "
         "config/published.csv has one (its source column says where it comes from). mean: over the datasets of the row.")


def paper_tables(tables_dir: str | os.PathLike, published_path: str | os.PathLike, methods: Sequence[str],
                 out_dir: str | os.PathLike | None = None) -> dict[str, pd.DataFrame]:
    """Write :data:`PAPER_TABLES` (CSV and Markdown) from the aggregate tables in ``tables_dir``.

    Args:
        tables_dir: the aggregate stage's folder (``fewshot_dice``, ``segmentation_dice``,
            ``classification_auc`` parquet files).
        published_path: ``config/published.csv``.
        methods: row order.
        out_dir: where to write; ``tables_dir`` if ``None``.

    Returns:
        the long tables (one row per dataset, method, setting and metric).
    """
    tables_dir = Path(tables_dir)
    out_dir = Path(out_dir) if out_dir is not None else tables_dir
    published = read_published(published_path)
    few = pd.read_parquet(tables_dir / "fewshot_dice.parquet")
    seg = pd.read_parquet(tables_dir / "segmentation_dice.parquet")
    probe = pd.read_parquet(tables_dir / "classification_auc.parquet")
    long = {
        "paper_fewshot": _long(few, "k=" + few["k"].astype(str), {"dice": "dice"}),
        "paper_finetune": _long(seg, seg["budget"], {"dice": "dice"}),
        "paper_classification": _long(probe, probe["pooling"] + " pooling",
                                      {"auroc": "auroc", "accuracy": "accuracy", "balanced_accuracy": "balanced_accuracy"}),
    }
    titles = {"paper_fewshot": "In-context segmentation (Dice %, test split), across datasets",
              "paper_finetune": "Finetuned segmentation (Dice %, test split) by label budget",
              "paper_classification": "Frozen-encoder classification (%, test split)"}
    result = {}
    for name, frame in long.items():
        table = _with_published(frame, published, name)
        write_with(out_dir / f"{name}.csv", lambda tmp, t=table: t.to_csv(tmp, index=False, float_format="%.6f"))
        write_text(out_dir / f"{name}.md", _wide_markdown(table, titles[name], methods, _NOTE))
        result[name] = table
    return result
