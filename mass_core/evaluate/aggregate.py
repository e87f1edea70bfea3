"""The paper's tables from the per-run metrics (the ``aggregate`` job).

Protocol (DESIGN.md, "Downstream protocols"): within one run (dataset,
method, label budget or k, seed) a class's Dice is averaged over the test
volumes that contain it (rows with NaN Dice, i.e. an empty truth, do not
count), then over classes; HD95 likewise. Across seeds the tables give the
mean and the sample standard deviation (``ddof=1``; NaN with one seed) and
the number of seeds.

Files written to ``out_dir`` (:data:`TABLES`), each as ``.parquet``, ``.csv``
and ``.md``:

- ``segmentation_dice`` / ``segmentation_hd95``: dataset x method x label budget
  (:class:`~mass_core.evaluate.subsets.Budget` token in ``budget``, with the
  realised ``label_cases`` and ``fraction`` of the train split, for plotting);
- ``segmentation_per_class``: dataset x method x budget x class;
- ``segmentation_vs_scratch``: dataset x pretrained method x budget, the paired
  Dice difference to ``scratch`` with a hierarchical bootstrap interval
  (:func:`~mass_core.evaluate.statistics.paired_bootstrap`);
- ``fewshot_dice`` (dataset x method x k) and ``fewshot_per_class``;
- ``classification_auc``: dataset x method x pooling (AUROC, accuracy, balanced accuracy).

The Markdown renders like a paper table: methods as rows (in the configured
order), label budgets (in :attr:`~mass_core.evaluate.subsets.Budget.sort_key`
order; or k, or metrics) as columns, the best value of each column in bold
(highest Dice / AUROC, lowest HD95; ties all bold). Outputs depend on the
input values only: rows are sorted by key (input order does not matter),
floats have fixed formats, the bootstrap has a fixed seed and nothing records
a time, so rerunning gives byte-identical files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from mass_core.atomic import write_text, write_with
from mass_core.evaluate.statistics import paired_bootstrap
from mass_core.evaluate.subsets import Budget

__all__ = ["TABLES", "aggregate", "format_cell", "format_difference", "markdown_table", "protocol_dice", "seed_statistics"]

TABLES = ("segmentation_dice", "segmentation_hd95", "segmentation_per_class", "segmentation_vs_scratch", "fewshot_dice", "fewshot_swap",
          "fewshot_per_class", "classification_auc")
# The reference of the paired differences: the same network from a random encoder.
_REFERENCE = "scratch"
_RESAMPLES = 10_000
_CSV_FLOAT = "%.6f"


def _read(paths: Iterable[str | os.PathLike], columns: Sequence[str]) -> pd.DataFrame:
    frames = [pd.read_parquet(p) for p in paths]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(columns))


def _budget_key(token: object) -> tuple[int, float]:
    return Budget.parse(str(token)).sort_key


def _order(frame: pd.DataFrame, keys: Sequence[str], methods: Sequence[str]) -> pd.DataFrame:
    """Sort rows by ``keys``; ``method`` follows ``methods`` (others after, alphabetically), ``budget`` its sort key."""
    if frame.empty:
        return frame.reset_index(drop=True)
    rank = {m: i for i, m in enumerate(methods)}
    keyed = frame.assign(_rank=frame["method"].map(lambda m: rank.get(m, len(rank))))
    if "budget" in keys:
        budgets = sorted(set(frame["budget"]), key=_budget_key)
        keyed["_budget"] = keyed["budget"].map({b: i for i, b in enumerate(budgets)})
    by: list[str] = []
    for key in keys:
        by += {"method": ["_rank", "method"], "budget": ["_budget"]}.get(key, [key])
    return keyed.sort_values(by, kind="mergesort").drop(columns=["_rank", "_budget"], errors="ignore").reset_index(drop=True)


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


def format_difference(mean: float, low: float, high: float, scale: float, decimals: int) -> str:
    """``"+4.2 [+1.0, +7.5]"`` (signed, times ``scale``), in bold where the interval excludes 0.

    Exclusion is judged on the printed bounds, so that rounding noise around 0
    (a bound of 1e-17) neither bolds ``[+0.0, ...]`` nor hides a printed ``[+0.1, ...]``.
    """
    low, high = round(low * scale, decimals), round(high * scale, decimals)
    text = f"{mean * scale:+.{decimals}f} [{low:+.{decimals}f}, {high:+.{decimals}f}]"
    return f"**{text}**" if low > 0 or high < 0 else text


def _grid(table: pd.DataFrame, row_key: str, column_key: str, row_order: Sequence[str], column_label: Callable[[object], str],
          column_sort: Callable[[object], object] | None, text: Callable[[pd.Series], str]) -> str:
    """A Markdown table with one cell ``text(row)`` per (``row_key``, ``column_key``) row of ``table``; ``–`` where none."""
    rows = [r for r in row_order if r in set(table[row_key])] + sorted(set(table[row_key]) - set(row_order))
    columns = sorted(set(table[column_key]), key=column_sort)
    cell = {(r[row_key], r[column_key]): r for _, r in table.iterrows()}
    lines = ["| " + " | ".join([row_key, *(column_label(c) for c in columns)]) + " |",
             "|" + "|".join(["---"] + [":---:"] * len(columns)) + "|"]
    for r in rows:
        cells = [text(cell[(r, c)]) if (r, c) in cell else "–" for c in columns]
        lines.append("| " + " | ".join([str(r), *cells]) + " |")
    return "\n".join(lines) + "\n"


def markdown_table(table: pd.DataFrame, row_key: str, column_key: str, value: str, *, higher_is_better: bool,
                   scale: float, decimals: int, column_label: Callable[[object], str], row_order: Sequence[str],
                   column_sort: Callable[[object], object] | None = None) -> str:
    """A Markdown table of ``<value>_mean ± <value>_std``: rows ``row_key``, columns ``column_key``, best in bold.

    Columns are sorted by ``column_sort`` (a sort key; ``None``: their values).
    The best cell of each column is the highest (or lowest) mean after
    rounding to the printed precision, so equal-looking numbers are bolded together.
    """
    table = table.reset_index(drop=True)
    rounded = table[f"{value}_mean"].map(lambda mean: round(mean * scale, decimals))
    best = rounded.groupby(table[column_key]).agg("max" if higher_is_better else "min")

    def text(entry: pd.Series) -> str:
        cell = format_cell(entry[f"{value}_mean"], entry[f"{value}_std"], scale, decimals)
        # NaN never equals the best, so a missing mean is never bold.
        return f"**{cell}**" if rounded[entry.name] == best[entry[column_key]] else cell

    return _grid(table, row_key, column_key, row_order, column_label, column_sort, text)


def _budget_label(token: object) -> str:
    return Budget.parse(str(token)).label


_HEADINGS: dict[str, Callable[[object], str]] = {
    "dataset": str,
    "budget": lambda b: f"labels: {_budget_label(b)}",
    "k": lambda k: f"k={k}",
    "pooling": lambda p: f"{p} pooling",
}


def _section_key(by: Sequence[str], key: object) -> tuple:
    key = key if isinstance(key, tuple) else (key,)
    return tuple(_budget_key(value) if name == "budget" else value for name, value in zip(by, key))


def _seeds_note(table: pd.DataFrame) -> str:
    seeds = sorted(set(int(n) for n in table["n_seeds"]))
    return "seeds: " + "/".join(str(s) for s in seeds)


def _sections(table: pd.DataFrame, title: str, render: Callable[[pd.DataFrame], str], by: Sequence[str] = ("dataset",),
              note: str = "") -> str:
    """One Markdown section per group of ``by``, budgets in their sort order, under ``title`` and ``note``."""
    header = f"# {title}\n" + (f"\n{note}\n" if note else "")
    if table.empty:
        return f"{header}\n_No results._\n"
    parts = [header]
    groups = table.groupby(list(by), sort=True)
    for key, group in sorted(groups, key=lambda item: _section_key(by, item[0])):
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
    seg = _read(finetune_metrics, ["budget", "label_cases", "fraction", *case_columns])
    _check_budget_sizes(seg)
    few_all = _read(fewshot_metrics, ["k", "references", *case_columns])
    if "references" not in few_all:
        # Runs from before the reference-swap control scored own references only.
        few_all = few_all.assign(references="own")
    few = few_all[few_all["references"] == "own"]
    probe = _read(probe_metrics, ["dataset", "method", "seed", "pooling", "auroc", "accuracy", "balanced_accuracy"])
    # label_cases and fraction follow from (dataset, budget); as keys they stay in the tables for plotting.
    seg_keys, few_keys = ["dataset", "method", "budget", "label_cases", "fraction"], ["dataset", "method", "k"]

    seg_class = _per_class_runs(seg, seg_keys)
    seg_runs = _runs(seg_class, seg_keys)
    few_class = _per_class_runs(few, few_keys)
    tables = {
        "segmentation_dice": _order(seed_statistics(seg_runs, seg_keys, ["dice"]), seg_keys, methods),
        "segmentation_hd95": _order(seed_statistics(seg_runs, seg_keys, ["hd95_mm"]), seg_keys, methods),
        "segmentation_per_class": _order(seed_statistics(seg_class, [*seg_keys, "class_id"], ["dice", "hd95_mm"]), [*seg_keys, "class_id"], methods),
        "segmentation_vs_scratch": _order(_versus_scratch(seg), ["dataset", "method", "budget"], methods),
        "fewshot_dice": _order(seed_statistics(_runs(few_class, few_keys), few_keys, ["dice"]), few_keys, methods),
        "fewshot_per_class": _order(seed_statistics(few_class, [*few_keys, "class_id"], ["dice"]), [*few_keys, "class_id"], methods),
        "fewshot_swap": _order(_reference_swap(few_all), few_keys, methods),
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
        for column in ("label_cases", "k", "class_id", "n_seeds", "n_cases"):
            if column in table:
                table[column] = table[column].astype(np.int64)

    def by_budget(value: str, higher: bool, scale: float, decimals: int) -> Callable[[pd.DataFrame], str]:
        return lambda g: markdown_table(g, "method", "budget", value, higher_is_better=higher, scale=scale, decimals=decimals,
                                        column_label=_budget_label, row_order=methods, column_sort=_budget_key)

    def difference(group: pd.DataFrame) -> str:
        return _grid(group, "method", "budget", methods, _budget_label, _budget_key,
                     lambda e: format_difference(e["diff_mean"], e["ci_low"], e["ci_high"], 100, 1))

    markdown = {
        "segmentation_dice": _sections(tables["segmentation_dice"], "Segmentation Dice (%) by label budget, finetuned, test split",
                                       by_budget("dice", True, 100, 1)),
        "segmentation_hd95": _sections(tables["segmentation_hd95"], "Segmentation HD95 (mm) by label budget, finetuned, test split",
                                       by_budget("hd95_mm", False, 1, 1)),
        "segmentation_per_class": _sections(
            tables["segmentation_per_class"], "Segmentation Dice (%) per class, finetuned, test split", per_class,
            by=("dataset", "budget")),
        "segmentation_vs_scratch": _sections(
            tables["segmentation_vs_scratch"], f"Segmentation Dice difference to {_REFERENCE} (points), finetuned, test split",
            difference, note=_DIFFERENCE_NOTE),
        "fewshot_dice": _sections(
            tables["fewshot_dice"], "In-context few-shot Dice (%) by number of reference cases k, test split",
            lambda g: markdown_table(g, "method", "k", "dice", higher_is_better=True, scale=100, decimals=1,
                                     column_label=lambda k: f"k={k}", row_order=methods)),
        "fewshot_per_class": _sections(
            tables["fewshot_per_class"], "In-context few-shot Dice (%) per class, test split", per_class,
            by=("dataset", "k")),
        "fewshot_swap": _sections(
            tables["fewshot_swap"], "Reference-swap control of in-context segmentation (Dice %), test split",
            _swap_markdown(methods), by=("dataset", "k"), note=_SWAP_NOTE),
        "classification_auc": _sections(tables["classification_auc"], "Frozen-encoder classification (%), test split",
                                        _classification_markdown(methods), by=("dataset", "pooling")),
    }
    for name in TABLES:
        _write(out_dir, name, tables[name], markdown[name])
    return tables


_DIFFERENCE_NOTE = (
    f"Mean paired difference (method minus {_REFERENCE}) of the test Dice of a case (mean over the classes present in it), "
    "paired by dataset, budget, seed and test case, [95 % CI]: paired hierarchical bootstrap over seeds and test cases, "
    f"95 % percentile interval ({_RESAMPLES:,} resamples). Bold: the interval excludes 0."
)


_SWAP_NOTE = (
    "own: each class segmented from its own references; swapped: from the references of another class (a cyclic shift "
    "over the classes), scored against the first class's truth. gap = own - swapped, the part of the Dice that comes from "
    "reading the reference (about 0 for a model that ignores it), paired by seed, test case and class; a case's value is "
    "the mean over the classes present in it. [95 % CI]: paired hierarchical bootstrap over seeds and test cases, "
    f"95 % percentile interval ({_RESAMPLES:,} resamples). Bold: the interval excludes 0."
)


def protocol_dice(cases: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """Dice of per-case rows the protocol's way: over the cases containing a class, then over classes, then over seeds.

    Args:
        cases: one row per (``keys``, seed, case, class) with ``dice`` (NaN for an absent class).
        keys: the grouping of the result (without ``seed``).
    """
    per_class = cases.groupby([*keys, "seed", "class_id"], sort=True)["dice"].mean()
    return per_class.groupby([*keys, "seed"]).mean().groupby(list(keys)).mean()


def _reference_swap(cases: pd.DataFrame) -> pd.DataFrame:
    """Own and swapped-reference Dice per (dataset, method, k) and their paired gap with its interval."""
    keys = ["dataset", "method", "k"]
    columns = [*keys, "dice_own", "dice_swapped", "diff_mean", "ci_low", "ci_high", "n_seeds", "n_cases"]
    if cases.empty or not (cases["references"] == "swapped").any():
        return pd.DataFrame(columns=columns)
    case_dice = cases.groupby([*keys, "references", "seed", "case_id"], sort=True)["dice"].mean().unstack("references").reset_index()
    gaps = paired_bootstrap(case_dice, keys, ("own", "swapped"), n_resamples=_RESAMPLES)
    # Table Dice the protocol's way: per class over cases, then over classes, then over seeds.
    means = protocol_dice(cases, [*keys, "references"]).unstack("references")
    means = means.rename(columns={"own": "dice_own", "swapped": "dice_swapped"}).reset_index()
    table = means.merge(gaps, on=keys).rename(columns={"n_clusters": "n_seeds", "n_units": "n_cases"})
    return table[columns]


def _swap_markdown(methods: Sequence[str]) -> Callable[[pd.DataFrame], str]:
    def render(group: pd.DataFrame) -> str:
        lines = ["| method | own | swapped | gap [95 % CI] |", "|---|:---:|:---:|:---:|"]
        rank = {m: i for i, m in enumerate(methods)}
        for _, row in sorted(group.iterrows(), key=lambda item: (rank.get(item[1]["method"], len(rank)), item[1]["method"])):
            gap = format_difference(row["diff_mean"], row["ci_low"], row["ci_high"], 100, 1)
            lines.append(f"| {row['method']} | {row['dice_own'] * 100:.1f} | {row['dice_swapped'] * 100:.1f} | {gap} |")
        return "\n".join(lines) + "\n"

    return render


def _check_budget_sizes(cases: pd.DataFrame) -> None:
    """Every run of one (dataset, budget) must have used the same number of labeled cases, or the tables would mix them."""
    sizes = cases.groupby(["dataset", "budget"])["label_cases"].nunique()
    if (sizes > 1).any():
        raise ValueError(f"runs of one dataset and label budget used different numbers of labeled cases: "
                         f"{[f'{d}/{b}' for d, b in sizes[sizes > 1].index]}; rerun them on the same manifest")


def _versus_scratch(cases: pd.DataFrame) -> pd.DataFrame:
    """Paired Dice difference of every other method to scratch per (dataset, budget), over seeds x test cases.

    Seed s of every method sees the same subset, decoder initialisation and
    crop stream, so (dataset, budget, seed, test case) pairs two runs.
    """
    budget_keys = ["dataset", "budget", "label_cases"]
    # A case's Dice: the mean over the classes present in it (NaN rows, absent classes, are skipped).
    case_dice = cases.groupby(["method", *budget_keys, "seed", "case_id"], sort=True)["dice"].mean().reset_index()
    reference = case_dice[case_dice["method"] == _REFERENCE].drop(columns="method")
    pairs = case_dice[case_dice["method"] != _REFERENCE].merge(reference, on=[*budget_keys, "seed", "case_id"],
                                                               suffixes=("", "_reference"))
    differences = paired_bootstrap(pairs, ["dataset", "method", "budget", "label_cases"], ("dice", "dice_reference"),
                                   n_resamples=_RESAMPLES)
    return differences.rename(columns={"n_clusters": "n_seeds", "n_units": "n_cases"})


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
