"""Training curves of a pretraining run: the loss terms and, for MASS, the held-out in-context check."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from mass_core.atomic import write_with
from mass_core.pretrain.metrics import METRICS_FILE, VALIDATION_FILE

__all__ = ["plot_training_curves", "training_curves_figure"]

_LOSS_TERMS = ("loss", "tversky", "bce", "reconstruction", "alignment")
_CHECKS = {"val_incontext_dice": "in-context Dice, own references", "val_swapped_dice": "swapped references",
           "val_swap_gap": "swap gap", "val_proposal_dice": "val proposal tasks"}


def training_curves_figure(run_dir: str | os.PathLike, title: str) -> Figure:
    """Loss terms vs step (left) and, where ``validation.csv`` exists, the held-out check in % vs step (right)."""
    run_dir = Path(run_dir)
    metrics = pd.read_csv(run_dir / METRICS_FILE)
    validation = pd.read_csv(run_dir / VALIDATION_FILE) if (run_dir / VALIDATION_FILE).is_file() else None
    fig = Figure(figsize=(9 if validation is not None else 4.5, 3.4))
    axes = fig.subplots(1, 2 if validation is not None else 1, squeeze=False)[0]
    for term in (t for t in _LOSS_TERMS if t in metrics):
        axes[0].plot(metrics["step"], metrics[term], label=term)
    axes[0].set(title=f"{title}: training loss", xlabel="step")
    axes[0].legend(fontsize=7)
    axes[0].grid(alpha=0.3)
    if validation is not None:
        for column, label in _CHECKS.items():
            if column in validation:
                axes[1].plot(validation["step"], validation[column] * 100, "o-", label=label)
        axes[1].set(title="held-out check (val split)", xlabel="step", ylabel="Dice (%)")
        axes[1].legend(fontsize=7)
        axes[1].grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_training_curves(run_dir: str | os.PathLike, out_path: str | os.PathLike, title: str) -> None:
    """Write :func:`training_curves_figure` of ``run_dir`` as a PNG."""
    fig = training_curves_figure(run_dir, title)
    write_with(out_path, lambda tmp: fig.savefig(tmp, dpi=100, metadata={"Software": None}))
