"""MASS against its pretraining budget (the ``learning_curve`` job): how far a longer run would go.

The pretraining run keeps snapshots at ``pretrain.train.snapshot_steps``
(:func:`~mass_core.pretrain.trainer.snapshot_path`); each snapshot and the
final checkpoint are evaluated like the final model, on the test split:

- in-context Dice at k = 1 with its own references and with swapped ones
  (:mod:`mass_core.evaluate.fewshot`), and the reference-swap gap;
- MASS-FT Dice with ``evaluation.learning_curve.label_count`` labeled cases,
  over ``evaluation.learning_curve.seeds``.

A snapshot is the run's state after n steps, not a run of n steps: its
learning rate was still that of the longer one-cycle schedule. The curve
therefore says how the model improves *during* the configured run; it is a
lower bound on what a shorter run with its own schedule would reach.

Written to ``results/tables/learning_curve.{parquet,csv,md}`` (one row per
dataset and pretraining step) and ``results/plots/learning_curve.png``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mass_core.atomic import write_text, write_with
from mass_core.evaluate.aggregate import protocol_dice

__all__ = ["learning_curve", "learning_curve_table", "plot_learning_curve"]

_COLUMNS = ["dataset", "step", "incontext_dice", "swapped_dice", "swap_gap", "finetune_dice_mean", "finetune_dice_std", "n_seeds"]
_DPI = 100


def learning_curve_table(fewshot: Mapping[int, Sequence[str | os.PathLike]], finetune: Mapping[int, Sequence[str | os.PathLike]]) -> pd.DataFrame:
    """One row per (dataset, pretraining step) from the evaluations of each snapshot.

    Args:
        fewshot: pretraining step -> ``metrics.parquet`` files of its in-context runs.
        finetune: pretraining step -> ``metrics.parquet`` files of its MASS-FT runs.
    """
    rows = []
    for step in sorted(set(fewshot) | set(finetune)):
        few = pd.concat([pd.read_parquet(p) for p in fewshot.get(step, [])] or [pd.DataFrame(columns=["dataset", "references", "seed", "class_id", "dice"])])
        tuned = pd.concat([pd.read_parquet(p) for p in finetune.get(step, [])] or [pd.DataFrame(columns=["dataset", "seed", "class_id", "dice"])])
        for dataset in sorted(set(few["dataset"]) | set(tuned["dataset"])):
            incontext = protocol_dice(few[few["dataset"] == dataset], ["references"])
            per_seed = tuned[tuned["dataset"] == dataset].groupby(["seed", "class_id"])["dice"].mean().groupby("seed").mean()
            own, swapped = incontext.get("own", np.nan), incontext.get("swapped", np.nan)
            rows.append({"dataset": dataset, "step": int(step), "incontext_dice": own, "swapped_dice": swapped, "swap_gap": own - swapped,
                         "finetune_dice_mean": per_seed.mean() if len(per_seed) else np.nan,
                         "finetune_dice_std": per_seed.std() if len(per_seed) > 1 else np.nan, "n_seeds": int(len(per_seed))})
    return pd.DataFrame(rows, columns=_COLUMNS)


def _markdown(table: pd.DataFrame, label_count: int) -> str:
    parts = ["# MASS by pretraining budget, test split\n",
             f"In-context Dice (%) at k = 1 with own and with swapped references, and MASS-FT Dice (%) with {label_count} "
             "labeled case(s), mean ± std over seeds. Snapshots of one run: the learning rate followed the whole run's schedule.\n"]
    for dataset, group in table.groupby("dataset", sort=True):
        lines = ["| pretraining steps | in-context (own) | swapped | gap | MASS-FT |", "|---|:---:|:---:|:---:|:---:|"]
        for _, r in group.sort_values("step").iterrows():
            tuned = "–" if pd.isna(r["finetune_dice_mean"]) else f"{r['finetune_dice_mean'] * 100:.1f}"
            if not pd.isna(r["finetune_dice_std"]):
                tuned += f" ± {r['finetune_dice_std'] * 100:.1f}"
            lines.append(f"| {r['step']} | {r['incontext_dice'] * 100:.1f} | {r['swapped_dice'] * 100:.1f} | {r['swap_gap'] * 100:+.1f} | {tuned} |")
        parts.append(f"## {dataset}\n\n" + "\n".join(lines) + "\n")
    return "\n".join(parts)


def plot_learning_curve(table: pd.DataFrame, out_path: str | os.PathLike) -> None:
    """Dice (%) vs pretraining steps: in-context (own, swapped) and MASS-FT with its seed band, one panel per dataset."""
    datasets = sorted(set(table["dataset"])) or ["(no results)"]
    fig = Figure(figsize=(4.5 * len(datasets), 3.6))
    for ax, dataset in zip(fig.subplots(1, len(datasets), squeeze=False)[0], datasets):
        rows = table[table["dataset"] == dataset].sort_values("step")
        steps = rows["step"].to_numpy()
        ax.plot(steps, rows["incontext_dice"] * 100, "o-", label="in-context, k=1")
        ax.plot(steps, rows["swapped_dice"] * 100, "o--", label="in-context, swapped references")
        mean, std = rows["finetune_dice_mean"].to_numpy() * 100, rows["finetune_dice_std"].fillna(0).to_numpy() * 100
        ax.plot(steps, mean, "s-", label="MASS-FT")
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2, color=ax.lines[-1].get_color())
        ax.set(title=dataset, xlabel="pretraining steps", ylabel="test Dice (%)", ylim=(0, 100))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    write_with(out_path, lambda tmp: fig.savefig(tmp, dpi=_DPI, metadata={"Software": None}))


def learning_curve(fewshot: Mapping[int, Sequence[str | os.PathLike]], finetune: Mapping[int, Sequence[str | os.PathLike]],
                   table_path: str | os.PathLike, plot_path: str | os.PathLike, label_count: int) -> pd.DataFrame:
    """Write ``learning_curve.{parquet,csv,md}`` (``table_path`` is the parquet) and the plot; return the table."""
    table = learning_curve_table(fewshot, finetune)
    table_path = Path(table_path)
    write_with(table_path, lambda tmp: table.to_parquet(tmp, index=False))
    write_with(table_path.with_suffix(".csv"), lambda tmp: table.to_csv(tmp, index=False, float_format="%.6f", lineterminator="\n"))
    write_text(table_path.with_suffix(".md"), _markdown(table, label_count))
    plot_learning_curve(table, plot_path)
    return table
