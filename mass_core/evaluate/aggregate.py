"""The paper's tables from the per-run metrics (the ``aggregate`` job).

Protocol (DESIGN.md, "Downstream protocols"): within one run (dataset,
method, label fraction or k, seed) a class's Dice is averaged over the test
volumes that contain it (rows with NaN Dice, i.e. an empty truth, do not
count), then over classes; HD95 likewise. Across seeds the tables give the
mean and the sample standard deviation (``ddof=1``; NaN with one seed) and
the number of seeds.

Files written to ``out_dir`` (:data:`TABLES`), each as ``.parquet``, ``.csv``
and ``.md``:

- ``segmentation_dice`` / ``segmentation_hd95``: dataset x method x fraction;
- ``segmentation_per_class``: dataset x method x fraction x class;
- ``fewshot_dice`` (dataset x method x k) and ``fewshot_per_class``;
- ``classification_auc``: dataset x method x pooling (AUROC, accuracy, balanced accuracy).

The Markdown renders like a paper table: methods as rows (in the configured
order), label fractions (or k, or metrics) as columns, the best value of each
column in bold (highest Dice / AUROC, lowest HD95; ties all bold). Outputs
depend on the input values only: rows are sorted by key (input order does not
matter), floats have fixed formats and nothing records a time, so rerunning
gives byte-identical files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from mass_core.atomic import write_text, write_with

__all__ = ["TABLES", "aggregate", "format_cell", "markdown_table", "seed_statistics"]

TABLES = ("segmentation_dice", "segmentation_hd95", "segmentation_per_class", "fewshot_dice", "fewshot_per_class", "classification_auc")
_CSV_FLOAT = "%.6f"


def _read(paths: Iterable[str | os.PathLike], columns: Sequence[str]) -> pd.DataFrame:
    frames = [pd.read_parquet(p) for p in paths]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(columns))


def _order(frame: pd.DataFrame, keys: Sequence[str], methods: Sequence[str]) -> pd.DataFrame:
    """Sort rows by ``keys``; ``method`` follows ``methods`` (others after, alphabetically)."""
    if frame.empty:
        return frame.reset_index(drop=True)
    rank = {m: i for i, m in enumerate(methods)}
    keyed = frame.assign(_rank=frame["method"].map(lambda m: rank.get(m, len(rank))))
    by: list[str] = []
    for key in keys:
        by += ["_rank", "method"] if key == "method" else [key]
    return keyed.sort_values(by, kind="mergesort").drop(columns="_rank").reset_index(drop=True)


def seed_statistics(runs: pd.DataFrame, keys: Sequence[str], values: Sequence[str]) -> pd.DataFrame:
    """Mean and sample std (``ddof=1``) over seeds of per-run ``values``, plus ``n_seeds``.

    Args:
        runs: one row per (``keys``, seed) run.
        keys: grouping columns (without ``seed``).
        values: columns to summarise; each gives ``<value>_mean`` and ``<value>_std``.

    Example:
        Dice 0.6 and 0.8 for two seeds -> ``dice_mean`` 0.7, ``dice_std`` 0.1414.
    """
    columns = [*keys] + [f"{v}_{s}" for v in values for s in ("mean", "std")] + ["n_seeds"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    grouped = runs.groupby(list(keys), sort=True, dropna=False)
    stats = grouped[list(values)].agg(["mean", "std"])
    stats.columns = [f"{v}_{s}" for v, s in stats.columns]
    stats["n_seeds"] = grouped["seed"].nunique()
    return stats.reset_index()[columns]


def _per_class_runs(cases: pd.DataFrame, run_keys: Sequence[str]) -> pd.DataFrame:
    # Mean over the test volumes that contain the class (NaN rows are skipped).
    return cases.groupby([*run_keys, "seed", "class_id"], sort=True)[["dice", "hd95_mm"]].mean().reset_index()


def _runs(per_class: pd.DataFrame, run_keys: Sequence[str]) -> pd.DataFrame:
    return per_class.groupby([*run_keys, "seed"], sort=True)[["dice", "hd95_mm"]].mean().reset_index()


def format_cell(mean: float, std: float, scale: float, decimals: int) -> str:
    """``"72.3 ± 1.2"`` (``mean * scale`` with ``decimals``); no ``±`` part when std is NaN; ``–`` for NaN mean."""
    if pd.isna(mean):
        return "–"
    text = f"{mean * scale:.{decimals}f}"
    return text if pd.isna(std) else f"{text} ± {std * scale:.{decimals}f}"


def markdown_table(table: pd.DataFrame, row_key: str, column_key: str, value: str, *, higher_is_better: bool,
                   scale: float, decimals: int, column_label: Callable[[object], str], row_order: Sequence[str]) -> str:
    """A Markdown table of ``<value>_mean ± <value>_std``: rows ``row_key``, columns ``column_key``, best in bold.

    The best cell of each column is the highest (or lowest) mean after
    rounding to the printed precision, so equal-looking numbers are bolded together.
    """
    rows = [r for r in row_order if r in set(table[row_key])] + sorted(set(table[row_key]) - set(row_order))
    columns = sorted(set(table[column_key]))
    cell = {(r[row_key], r[column_key]): r for _, r in table.iterrows()}
    best = {}
    for c in columns:
        means = [round(cell[(r, c)][f"{value}_mean"] * scale, decimals) for r in rows
                 if (r, c) in cell and not pd.isna(cell[(r, c)][f"{value}_mean"])]
        best[c] = (max(means) if higher_is_better else min(means)) if means else None
    lines = ["| " + " | ".join([row_key, *(column_label(c) for c in columns)]) + " |",
             "|" + "|".join(["---"] + [":---:"] * len(columns)) + "|"]
    for r in rows:
        cells = [str(r)]
        for c in columns:
            entry = cell.get((r, c))
            if entry is None:
                cells.append("–")
                continue
            text = format_cell(entry[f"{value}_mean"], entry[f"{value}_std"], scale, decimals)
            is_best = best[c] is not None and not pd.isna(entry[f"{value}_mean"]) and round(entry[f"{value}_mean"] * scale, decimals) == best[c]
            cells.append(f"**{text}**" if is_best else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fraction_label(fraction: object) -> str:
    return f"{float(fraction) * 100:g}%"


_HEADINGS: dict[str, Callable[[object], str]] = {
    "dataset": str,
    "fraction": lambda f: f"{_fraction_label(f)} of the labels",
    "k": lambda k: f"k={k}",
    "pooling": lambda p: f"{p} pooling",
}


def _seeds_note(table: pd.DataFrame) -> str:
    seeds = sorted(set(int(n) for n in table["n_seeds"]))
    return "seeds: " + "/".join(str(s) for s in seeds)


def _sections(table: pd.DataFrame, title: str, render: Callable[[pd.DataFrame], str], by: Sequence[str] = ("dataset",)) -> str:
    if table.empty:
        return f"# {title}\n\n_No results._\n"
    parts = [f"# {title}\n"]
    for key, group in table.groupby(list(by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        heading = ", ".join(_HEADINGS[name](value) for name, value in zip(by, key))
        parts.append(f"## {heading} ({_seeds_note(group)})\n\n" + render(group))
    return "\n".join(parts)


def _write(out_dir: Path, name: str, table: pd.DataFrame, markdown: str) -> None:
    write_with(out_dir / f"{name}.parquet", lambda tmp: table.to_parquet(tmp, index=False))
    write_with(out_dir / f"{name}.csv", lambda tmp: table.to_csv(tmp, index=False, float_format=_CSV_FLOAT, lineterminator="\n"))
    write_text(out_dir / f"{name}.md", markdown)


def aggregate(
    finetune_metrics: Iterable[str | os.PathLike],
    fewshot_metrics: Iterable[str | os.PathLike],
    probe_metrics: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    methods: Sequence[str],
    class_names: Mapping[str, Mapping[int, str]] | None = None,
) -> dict[str, pd.DataFrame]:
    """Write :data:`TABLES` (parquet, CSV, Markdown) into ``out_dir`` and return them.

    Args:
        finetune_metrics: ``metrics.parquet`` files of ``finetune_seg`` runs.
        fewshot_metrics: ``metrics.parquet`` files of ``incontext_fewshot`` runs.
        probe_metrics: ``metrics.parquet`` files of ``linear_probe`` runs.
        out_dir: the tables folder (``results/tables``).
        methods: row order of the tables (the configured methods).
        class_names: per dataset, class id -> name (:func:`mass_core.datasets.class_names`);
            the per-class tables get a ``class_name`` column and use the names as
            Markdown headings. Unnamed classes are called ``class <id>``.
    """
    out_dir = Path(out_dir)
    case_columns = ["dataset", "method", "seed", "case_id", "class_id", "dice", "hd95_mm"]
    seg = _read(finetune_metrics, ["fraction", *case_columns])
    few = _read(fewshot_metrics, ["k", *case_columns])
    probe = _read(probe_metrics, ["dataset", "method", "seed", "pooling", "auroc", "accuracy", "balanced_accuracy"])
    seg_keys, few_keys = ["dataset", "method", "fraction"], ["dataset", "method", "k"]

    seg_class = _per_class_runs(seg, seg_keys)
    seg_runs = _runs(seg_class, seg_keys)
    few_class = _per_class_runs(few, few_keys)
    tables = {
        "segmentation_dice": _order(seed_statistics(seg_runs, seg_keys, ["dice"]), seg_keys, methods),
        "segmentation_hd95": _order(seed_statistics(seg_runs, seg_keys, ["hd95_mm"]), seg_keys, methods),
        "segmentation_per_class": _order(seed_statistics(seg_class, [*seg_keys, "class_id"], ["dice", "hd95_mm"]), [*seg_keys, "class_id"], methods),
        "fewshot_dice": _order(seed_statistics(_runs(few_class, few_keys), few_keys, ["dice"]), few_keys, methods),
        "fewshot_per_class": _order(seed_statistics(few_class, [*few_keys, "class_id"], ["dice"]), [*few_keys, "class_id"], methods),
        "classification_auc": _order(seed_statistics(probe, ["dataset", "method", "pooling"], ["auroc", "accuracy", "balanced_accuracy"]),
                                     ["dataset", "method", "pooling"], methods),
    }
    names = {str(d): {int(c): str(n) for c, n in m.items()} for d, m in (class_names or {}).items()}

    def class_name(dataset: str, class_id: int) -> str:
        return names.get(str(dataset), {}).get(int(class_id), f"class {class_id}")

    for name in ("segmentation_per_class", "fewshot_per_class"):
        table = tables[name]
        table.insert(table.columns.get_loc("class_id") + 1, "class_name",
                     pd.Series([class_name(d, c) for d, c in zip(table["dataset"], table["class_id"])], index=table.index, dtype=object))

    def per_class(group: pd.DataFrame) -> str:
        dataset = group["dataset"].iloc[0]
        return markdown_table(group, "method", "class_id", "dice", higher_is_better=True, scale=100, decimals=1,
                              column_label=lambda c: class_name(dataset, c), row_order=methods)

    for name, table in tables.items():
        for column in ("fraction",):
            if column in table:
                table[column] = table[column].astype(float)
        for column in ("k", "class_id", "n_seeds"):
            if column in table:
                table[column] = table[column].astype(np.int64)

    def by_fraction(value: str, higher: bool, scale: float, decimals: int) -> Callable[[pd.DataFrame], str]:
        return lambda g: markdown_table(g, "method", "fraction", value, higher_is_better=higher, scale=scale, decimals=decimals,
                                        column_label=_fraction_label, row_order=methods)

    markdown = {
        "segmentation_dice": _sections(tables["segmentation_dice"], "Segmentation Dice (%) by label fraction, finetuned, test split",
                                       by_fraction("dice", True, 100, 1)),
        "segmentation_hd95": _sections(tables["segmentation_hd95"], "Segmentation HD95 (mm) by label fraction, finetuned, test split",
                                       by_fraction("hd95_mm", False, 1, 1)),
        "segmentation_per_class": _sections(
            tables["segmentation_per_class"], "Segmentation Dice (%) per class, finetuned, test split", per_class,
            by=("dataset", "fraction")),
        "fewshot_dice": _sections(
            tables["fewshot_dice"], "In-context few-shot Dice (%) by number of reference cases k, test split",
            lambda g: markdown_table(g, "method", "k", "dice", higher_is_better=True, scale=100, decimals=1,
                                     column_label=lambda k: f"k={k}", row_order=methods)),
        "fewshot_per_class": _sections(
            tables["fewshot_per_class"], "In-context few-shot Dice (%) per class, test split", per_class,
            by=("dataset", "k")),
        "classification_auc": _sections(tables["classification_auc"], "Frozen-encoder classification (%), test split",
                                        _classification_markdown(methods), by=("dataset", "pooling")),
    }
    for name in TABLES:
        _write(out_dir, name, tables[name], markdown[name])
    return tables


def _classification_markdown(methods: Sequence[str]) -> Callable[[pd.DataFrame], str]:
    labels = {"auroc": "AUROC", "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy"}

    def render(group: pd.DataFrame) -> str:
        # One long table (method x metric) so that markdown_table bolds the best per metric column.
        long = pd.concat([group[["method", f"{m}_mean", f"{m}_std"]].set_axis(["method", "value_mean", "value_std"], axis=1).assign(metric=i)
                          for i, m in enumerate(labels)], ignore_index=True)
        names = list(labels.values())
        return markdown_table(long, "method", "metric", "value", higher_is_better=True, scale=100, decimals=1,
                              column_label=lambda i: names[int(i)], row_order=methods)

    return render
