"""Crops, devices and sliding-window inference shared by the evaluation jobs.

Arrays follow the project's convention (``docs/data_format.md``): volumes
are ``(X, Y, Z)`` in RAS on the standardized grid, tensors add ``(B, C)``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from mass_core.arrays import crop_padded

__all__ = ["available_cpus", "centred_box", "check_window", "extract_crop", "resolve_device", "sliding_window_logits"]

# cgroup v2 CPU quota ("max 100000" or "200000 100000"): what a container or a
# Slurm job may use, which neither os.cpu_count() nor the affinity mask shows.
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota where one is set.

    PyTorch's default thread count ignores a CPU quota (a container's
    ``--cpus``, a cgroup-limited job): it starts as many threads as the machine
    has cores, and they wait on each other at every operation.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota readable: the affinity mask is all there is
    return cpus


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (CUDA when available), ``"cuda"`` or ``"cpu"``.

    Raises:
        ValueError: an unknown name, or ``"cuda"`` without a CUDA device.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device is 'cuda' but no CUDA device is available")
    if name not in ("cuda", "cpu"):
        raise ValueError(f"device must be 'auto', 'cuda' or 'cpu', got {name!r}")
    return torch.device(name)


def check_window(size: Sequence[int], factor: int, name: str) -> tuple[int, int, int]:
    """Validate a crop / window size: three positive multiples of the encoder's downsampling ``factor``."""
    window = tuple(int(s) for s in size)
    if len(window) != 3 or min(window) < 1 or any(s % factor for s in window):
        raise ValueError(f"{name} must be three positive multiples of {factor} (the encoder's downsampling factor), got {tuple(size)}")
    return window  # type: ignore[return-value]


def centred_box(shape: Sequence[int], size: Sequence[int], centre: Sequence[float]) -> tuple[int, int, int]:
    """Start corner of a ``size`` box centred on ``centre``, shifted to lie inside ``shape`` where it fits.

    Where the volume is smaller than the box along an axis, the box starts at
    0 and :func:`extract_crop` pads the rest.
    """
    starts = []
    for n, s, c in zip(shape, size, centre):
        start = int(round(float(c) - s / 2.0))
        starts.append(max(0, min(start, n - s)) if n >= s else 0)
    return tuple(starts)  # type: ignore[return-value]


def extract_crop(volume: np.ndarray, start: Sequence[int], size: Sequence[int], pad_value: float) -> np.ndarray:
    """Copy of ``volume[start : start + size]``, padded with ``pad_value`` where it leaves the volume.

    Args:
        volume: ``(X, Y, Z)`` array (an mmap'd ``.npy`` is read only inside the box).
        start: corner of the box in voxels (may be negative).
        size: box size in voxels.
    """
    crop = crop_padded(volume, start, size, pad_value)
    return np.full(tuple(int(s) for s in size), pad_value, dtype=volume.dtype) if crop is None else crop


def sliding_window_logits(
    volume: np.ndarray,
    predictor: Callable[[torch.Tensor], torch.Tensor],
    roi_size: Sequence[int],
    overlap: float,
    sw_batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """Logits of ``predictor`` over a whole volume by MONAI's sliding-window inference.

    Args:
        volume: float ``(X, Y, Z)`` standardized image.
        predictor: maps windows ``(B, 1, *roi_size)`` to logits ``(B, C, *roi_size)``.
        roi_size: window size in voxels (multiples of the encoder's downsampling factor).
        overlap: fraction of overlap between neighbouring windows (the paper: 0.5).
        sw_batch_size: windows per forward pass.
        device: where windows are processed.

    Returns:
        float32 ``(C, X, Y, Z)`` logits on the CPU. Overlapping windows are
        blended with Gaussian weights (nnU-Net's choice: window borders, which
        see less context, count less). A volume smaller than the window is
        padded with its minimum (air), not with 0 (the mean intensity).
    """
    # A copy: volumes are often read-only memory maps.
    x = torch.from_numpy(np.array(volume, dtype=np.float32))[None, None]
    # inference_mode rather than no_grad: no autograd bookkeeping at all (version counters, views).
    with torch.inference_mode():
        logits = sliding_window_inference(x, tuple(roi_size), sw_batch_size, predictor, overlap=overlap, mode="gaussian",
                                          cval=float(x.min()), sw_device=device, device=torch.device("cpu"))
    return logits[0].float()
