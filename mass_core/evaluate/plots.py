"""Figures of the evaluation (the ``plots`` job): label efficiency, few-shot Dice, example predictions.

Figures are built with matplotlib's object API (``Figure``, rendered by the
Agg canvas; no pyplot state, no display needed), fixed sizes and DPI, and
PNGs without a ``Software`` tag, so equal inputs give equal files.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from mass_core.atomic import write_with
from mass_core.evaluate.subsets import Budget
from mass_core.labels import foreground_classes, ignored
from mass_core.manifest import read_manifest

__all__ = ["label_efficiency_figure", "make_plots", "plot_examples", "plot_fewshot", "plot_label_efficiency"]

_DPI = 100


def _save(fig: Figure, path: str | os.PathLike) -> None:
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=_DPI, metadata={"Software": None}))


def _method_order(present: Sequence[str], methods: Sequence[str]) -> list[str]:
    return [m for m in methods if m in set(present)] + sorted(set(present) - set(methods))


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def label_efficiency_figure(dice_table: pd.DataFrame, methods: Sequence[str]) -> Figure:
    """Test Dice (%) vs number of labeled training cases, one line per method, one panel per dataset.

    Count budgets (squares) and fraction budgets (circles) share one axis,
    the number of cases a budget realised on the dataset (log scale), which
    orders budgets of both kinds by the labels they hold. A band
    of mean ± std over seeds surrounds a line where neighbouring budgets both
    have >= 2 seeds; a budget with >= 2 seeds but no such neighbour gets an error bar.

    Args:
        dice_table: the ``segmentation_dice`` table of :mod:`mass_core.evaluate.aggregate`
            (``budget``, ``label_cases``, ``dice_mean``, ``dice_std``, ``n_seeds``).
        methods: line order (the configured methods).
    """
    datasets = sorted(set(dice_table["dataset"])) or ["(no results)"]
    fig = Figure(figsize=(4.5 * len(datasets), 3.6))
    axes = fig.subplots(1, len(datasets), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        table = dice_table[dice_table["dataset"] == dataset]
        if table.empty:
            _empty(ax, "no finetuning results")
            continue
        for method in _method_order(table["method"].unique(), methods):
            _draw_method(ax, table[table["method"] == method], method)
        cases = sorted(set(int(n) for n in table["label_cases"]))
        ax.set_xscale("log")
        ax.set_xticks(cases, [str(n) for n in cases])
        ax.minorticks_off()
        ax.set_xlabel("labeled training cases (■ counts, ● fractions)")
        ax.set_ylabel("test Dice (%)")
        ax.set_title(dataset)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _draw_method(ax: Axes, rows: pd.DataFrame, method: str) -> None:
    budgets = rows["budget"].map(Budget.parse)
    rows = rows.assign(_key=budgets.map(lambda b: b.sort_key), _kind=budgets.map(lambda b: b.kind)).sort_values(["label_cases", "_key"])
    x, mean, std = rows["label_cases"].to_numpy(), rows["dice_mean"].to_numpy() * 100, rows["dice_std"].to_numpy() * 100
    (line,) = ax.plot(x, mean, label=method)
    for kind, marker in (("fraction", "o"), ("cases", "s")):
        shown = (rows["_kind"] == kind).to_numpy()
        ax.plot(x[shown], mean[shown], linestyle="none", marker=marker, color=line.get_color())
    spread = (rows["n_seeds"] >= 2).to_numpy() & np.isfinite(std)
    ax.fill_between(x, mean - std, mean + std, where=spread, color=line.get_color(), alpha=0.2, linewidth=0)
    # fill_between spans consecutive selected points only; show an isolated one as a bar.
    neighbour = np.zeros_like(spread)
    neighbour[1:] |= spread[:-1]
    neighbour[:-1] |= spread[1:]
    alone = spread & ~neighbour
    ax.errorbar(x[alone], mean[alone], yerr=std[alone], linestyle="none", capsize=3, color=line.get_color())


def plot_label_efficiency(dice_table: pd.DataFrame, out_path: str | os.PathLike, methods: Sequence[str]) -> None:
    """Write :func:`label_efficiency_figure` to ``out_path`` (PNG)."""
    _save(label_efficiency_figure(dice_table, methods), out_path)


def plot_fewshot(per_class_table: pd.DataFrame, dice_table: pd.DataFrame, out_path: str | os.PathLike,
                 novel_classes: Mapping[str, Sequence[int]]) -> None:
    """In-context Dice (%) vs k: mean over classes (thick) and each class (thin), per dataset and method.

    Args:
        per_class_table: the ``fewshot_per_class`` table.
        dice_table: the ``fewshot_dice`` table.
        out_path: PNG to write.
        novel_classes: dataset -> classes drawn dashed and marked "novel" (the phantom: lesion, 7).
    """
    panels = sorted(set(zip(dice_table["dataset"], dice_table["method"]))) or [("(no results)", "")]
    fig = Figure(figsize=(4.5 * len(panels), 3.6))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (dataset, method) in zip(axes[0], panels):
        mean = dice_table[(dice_table["dataset"] == dataset) & (dice_table["method"] == method)].sort_values("k")
        if mean.empty:
            _empty(ax, "no few-shot results")
            continue
        per_class = per_class_table[(per_class_table["dataset"] == dataset) & (per_class_table["method"] == method)]
        for class_id, rows in per_class.groupby("class_id", sort=True):
            rows = rows.sort_values("k")
            novel = int(class_id) in set(novel_classes.get(dataset, ()))
            ax.plot(rows["k"], rows["dice_mean"] * 100, linestyle="--" if novel else "-", linewidth=1, alpha=0.7,
                    marker=".", label=str(rows["class_name"].iloc[0]) + (" (novel)" if novel else ""))
        ax.errorbar(mean["k"], mean["dice_mean"] * 100, yerr=mean["dice_std"].fillna(0) * 100, color="black",
                    linewidth=2.5, marker="o", capsize=3, label="mean")
        ax.set_xticks(sorted(set(mean["k"])))
        ax.set_xlabel("reference cases per class (k)")
        ax.set_ylabel("test Dice (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"{dataset}: {method} in context")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    _save(fig, out_path)


def _axial(volume: np.ndarray, z: int) -> np.ndarray:
    # RAS (X, Y, Z) -> radiological view: anterior up, patient's right on the left.
    return np.asarray(volume[:, :, z]).T[::-1, ::-1]


def plot_examples(manifest_path: str | os.PathLike, predictions: Mapping[str, str | os.PathLike], out_path: str | os.PathLike,
                  title: str, methods: Sequence[str]) -> None:
    """Axial slice of one test case: image, ground truth, and each method's prediction overlaid.

    The case is the first test case (by id) with the most classes present; the
    slice is the one with the most voxels of its rarest class, so that small
    structures such as lesions are visible.

    Args:
        manifest_path: the dataset's ``manifest.parquet``.
        predictions: method -> ``predictions.npz`` of a finetuning run (test label maps by case id).
        out_path: PNG to write.
        title: figure title (for example the label budget shown).
        methods: panel order.
    """
    test = read_manifest(manifest_path, "test").sort_values("case_id", kind="stable")
    test = test[test["label"] != ""]
    if test.empty:
        raise ValueError(f"{manifest_path}: no labeled test case to show")
    counts = test["label_classes"].map(len)
    row = test.loc[counts[counts == counts.max()].index[0]]
    image, label = np.load(row["image"]), np.load(row["label"])
    # Ignored voxels are no class: drawn without an overlay, like background.
    label = np.where(ignored(label), 0, label)
    present = foreground_classes(label)
    if present:
        sizes = {c: int((label == c).sum()) for c in present}
        rarest = min(present, key=lambda c: (sizes[c], c))
        z = int(np.argmax((label == rarest).sum(axis=(0, 1))))
    else:
        z = label.shape[2] // 2
    maps = {"ground truth": label}
    for method in _method_order(list(predictions), methods):
        with np.load(predictions[method]) as stored:
            maps[method] = stored[row["case_id"]]
    colours = ListedColormap(matplotlib.colormaps["tab10"].colors[: max(int(label.max()), max(int(m.max()) for m in maps.values()), 1)])
    fig = Figure(figsize=(2.6 * (len(maps) + 1), 3.0))
    axes = fig.subplots(1, len(maps) + 1, squeeze=False)
    background = _axial(image, z)
    axes[0, 0].imshow(background, cmap="gray", vmin=-2, vmax=2)
    axes[0, 0].set_title(f"{row['case_id']} z={z}", fontsize=9)
    for ax, (name, labels) in zip(axes[0, 1:], maps.items()):
        ax.imshow(background, cmap="gray", vmin=-2, vmax=2)
        overlay = _axial(labels, z).astype(float)
        ax.imshow(np.ma.masked_where(overlay == 0, overlay - 1), cmap=colours, vmin=0, vmax=colours.N - 1, alpha=0.55,
                  interpolation="nearest")
        ax.set_title(name, fontsize=9)
    for ax in axes[0]:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, out_path)


def make_plots(dice_table: str | os.PathLike, fewshot_table: str | os.PathLike, fewshot_per_class_table: str | os.PathLike,
               efficiency_png: str | os.PathLike, fewshot_png: str | os.PathLike, examples: Mapping[str, Mapping[str, Any]],
               methods: Sequence[str], novel_classes: Mapping[str, Sequence[int]]) -> None:
    """All figures of the ``plots`` job.

    Args:
        dice_table: ``segmentation_dice.parquet`` of :mod:`mass_core.evaluate.aggregate`.
        fewshot_table: ``fewshot_dice.parquet``.
        fewshot_per_class_table: ``fewshot_per_class.parquet``.
        efficiency_png: where to write the label-efficiency figure.
        fewshot_png: where to write the few-shot figure.
        examples: dataset -> ``{"manifest", "predictions" (method -> predictions.npz), "title", "out"}``.
        methods: line and panel order.
        novel_classes: dataset -> classes marked "novel" in the few-shot figure.
    """
    plot_label_efficiency(pd.read_parquet(dice_table), efficiency_png, methods)
    plot_fewshot(pd.read_parquet(fewshot_per_class_table), pd.read_parquet(fewshot_table), fewshot_png, novel_classes)
    for dataset in sorted(examples):
        spec = examples[dataset]
        plot_examples(spec["manifest"], spec["predictions"], spec["out"], f"{dataset}: {spec['title']}", methods)
