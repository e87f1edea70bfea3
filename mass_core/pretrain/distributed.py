"""Process-group setup for ``torchrun``; a single process takes the same code path.

``torchrun --nproc_per_node=N -m mass_core.pretrain ...`` sets ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK``; without them the run is one process of rank 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.distributed as dist

__all__ = ["DistEnv", "any_rank", "in_process_group", "mean_over_process_group", "mean_over_ranks", "setup_distributed", "teardown_distributed"]


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the run.

    Attributes:
        rank: global rank, 0 in a single-process run.
        world_size: number of processes.
        device: the device this process trains on.
    """

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs and the progress bar."""
        return self.rank == 0


def _pick_device(preference: str, local_rank: int) -> torch.device:
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device is 'cuda' but no CUDA device is available")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if preference != "cpu":
        raise ValueError(f"device must be 'auto', 'cuda' or 'cpu', got {preference!r}")
    return torch.device("cpu")


def setup_distributed(device: str = "auto") -> DistEnv:
    """Join the process group when ``WORLD_SIZE > 1`` (NCCL on GPUs, Gloo on CPUs).

    Args:
        device: ``"auto"`` (CUDA when available), ``"cuda"`` or ``"cpu"``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = _pick_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    return DistEnv(rank=rank, world_size=world_size, device=chosen)


def teardown_distributed(env: DistEnv) -> None:
    """Leave the process group if this run joined one."""
    if env.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def any_rank(flag: bool, env: DistEnv) -> bool:
    """True on every rank when ``flag`` is True on at least one (a collective: all ranks must call it)."""
    if env.world_size == 1:
        return flag
    value = torch.tensor([int(flag)], device=env.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def mean_over_ranks(values: Mapping[str, float], env: DistEnv) -> dict[str, float]:
    """``values`` averaged over the ranks (a collective: every rank must call it, with the same keys).

    Logged losses then describe the global batch, as in a one-process run.
    """
    if env.world_size == 1:
        return dict(values)
    keys = sorted(values)
    total = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=env.device)
    dist.all_reduce(total)
    return {k: v / env.world_size for k, v in zip(keys, total.tolist())}


def in_process_group() -> bool:
    """True in a run of several processes (torch.distributed initialised with more than one)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def mean_over_process_group(value: torch.Tensor) -> torch.Tensor:
    """``value``'s element-wise mean over the processes, detached (a collective: every rank must call it).

    For losses whose denominators are counts that vary between the ranks'
    batches: dividing by the counts' mean makes DDP's average of the ranks'
    gradients the gradient of the global batch's mean.
    """
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()
