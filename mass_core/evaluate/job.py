"""What every evaluation job does around its own work.

Finetuning, few-shot segmentation and the frozen-encoder probe each: mark
their output folder incomplete before anything else (its marker file, written
last, says a run finished; :func:`~mass_core.atomic.uncommit`), set torch's
CPU threads, pick a device, time themselves, and write their tables and
summary atomically. :func:`start_job` does the first three and returns an
:class:`EvaluationJob` that does the rest.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import pandas as pd
import torch

from mass_core.atomic import uncommit, write_json, write_with
from mass_core.evaluate.windows import resolve_device

__all__ = ["EvaluationJob", "finite", "start_job"]


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


@dataclass
class EvaluationJob:
    """A started evaluation job: where it writes, on which device, since when.

    Attributes:
        out_dir: the output folder.
        files: role -> file name of every output (e.g. ``{"metrics": "metrics.parquet"}``).
        device: where the models run.
    """

    out_dir: Path
    files: Mapping[str, str]
    device: torch.device
    _started: float = field(default_factory=time.perf_counter)
    _cpu_started: float = field(default_factory=time.process_time)

    def seconds(self) -> dict[str, float]:
        """Wall-clock and CPU seconds since the job started, rounded to 0.1 s."""
        return {"total_seconds": round(time.perf_counter() - self._started, 1),
                "cpu_seconds": round(time.process_time() - self._cpu_started, 1)}

    def write(self, role: str, writer: Callable[[Path], Any]) -> Path:
        """Write the output ``role`` atomically through ``writer(tmp_path)``."""
        return write_with(self.out_dir / self.files[role], writer)

    def write_table(self, role: str, table: pd.DataFrame) -> Path:
        """Write the output ``role`` as parquet, atomically."""
        return self.write(role, lambda tmp: table.to_parquet(tmp, index=False))

    def write_summary(self, summary: Mapping[str, Any]) -> dict[str, Any]:
        """Write ``summary.json`` (the marker: call it last) with the job's device and timings; return what was written."""
        written = finite({**summary, "device": str(self.device), **self.seconds()})
        write_json(self.out_dir / self.files["summary"], written)
        return written


def start_job(out_dir: str | os.PathLike, files: Mapping[str, str], marker: str, threads: int | None,
              device: str) -> EvaluationJob:
    """Mark ``out_dir`` incomplete (``files[marker]`` first), set torch's threads, resolve ``device``, start the clocks.

    Args:
        out_dir: the job's output folder.
        files: role -> file name of every output the job writes.
        marker: the role written last, whose presence means "finished".
        threads: torch CPU threads (the Snakemake job's ``threads``); ``None`` leaves torch's default.
        device: ``auto`` (CUDA when available), ``cuda`` or ``cpu``.
    """
    out_dir = Path(out_dir)
    uncommit(out_dir, files[marker], [name for role, name in files.items() if role != marker])
    if threads is not None:
        torch.set_num_threads(int(threads))
    return EvaluationJob(out_dir, files, resolve_device(device))
