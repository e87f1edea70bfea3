"""Training metrics: ``metrics.csv`` always, TensorBoard when it is installed.

The rows logged so far also travel inside every checkpoint, so the CSV is
rebuilt from ``latest.pt`` on resume: it holds each step once, matches the
weights, and survives a scheduler (or Snakemake) deleting the files of a
failed attempt.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Mapping, Sequence

from mass_core.atomic import atomic_path

__all__ = ["METRICS_FILE", "MetricsLogger", "VALIDATION_FILE"]

METRICS_FILE = "metrics.csv"
# Held-out checks (PretextTask.validate), logged less often than the loss.
VALIDATION_FILE = "validation.csv"


class MetricsLogger:
    """Write ``<out_dir>/<file_name>``: one row per logged step, columns ``step`` then the values.

    Args:
        out_dir: the run folder.
        history: rows restored from a checkpoint (empty for a fresh run); the
            CSV is rewritten to exactly these before new rows are appended.
        file_name: :data:`METRICS_FILE` or :data:`VALIDATION_FILE`.
    """

    def __init__(self, out_dir: str | os.PathLike, history: Sequence[Mapping[str, float]] = (), file_name: str = METRICS_FILE) -> None:
        self.path = Path(out_dir) / file_name
        self.rows: list[dict[str, float]] = [dict(row) for row in history]
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="") as f:
                if self.rows:
                    writer = csv.DictWriter(f, fieldnames=list(self.rows[0]))
                    writer.writeheader()
                    writer.writerows(self.rows)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            self._tensorboard = None
        else:
            last = int(self.rows[-1]["step"]) if self.rows else 0
            self._tensorboard = SummaryWriter(str(Path(out_dir) / "tensorboard"), purge_step=last + 1)

    def log(self, step: int, values: Mapping[str, float]) -> None:
        """Record ``values`` at ``step`` (count of completed optimiser steps)."""
        row = {"step": step, **values}
        fields = list(self.rows[0]) if self.rows else list(row)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if not self.rows:
                writer.writeheader()
            writer.writerow(row)
        self.rows.append(row)
        if self._tensorboard is not None:
            for key, value in values.items():
                self._tensorboard.add_scalar(key, value, step)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
