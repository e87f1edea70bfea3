"""Data loading keyed by training step: no iterator state to save or restore.

Sample ``i`` of global step ``t`` is ``task.sample(seed, t, i)`` with
``i = rank * batch_size + j`` for the ``j``-th sample of a rank's batch, so a
run on N processes draws the same samples as one process with an N-times
larger batch, and a resumed run continues with exactly the samples an
uninterrupted run would have drawn.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mass_core.pretrain.task import PretextTask

__all__ = ["StepDataset", "StepSampler", "make_loader"]


class StepDataset(Dataset):
    """Maps a flat index ``step * global_batch + i`` to ``task.sample(seed, step, i)``."""

    def __init__(self, task: PretextTask, seed: int, global_batch: int) -> None:
        self.task = task
        self.seed = seed
        self.global_batch = global_batch

    def __getitem__(self, flat_index: int) -> dict[str, Any]:
        step, index = divmod(flat_index, self.global_batch)
        return self.task.sample(self.seed, step, index)


class StepSampler(Sampler[int]):
    """Flat indices of this rank's samples for steps ``start_step .. total_steps - 1``.

    Args:
        start_step: first step to draw (the resumed step).
        total_steps: end of training.
        batch_size: samples per step on this rank.
        rank: this process's rank.
        world_size: number of processes.
    """

    def __init__(self, start_step: int, total_steps: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.start_step = start_step
        self.total_steps = total_steps
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[int]:
        global_batch = self.batch_size * self.world_size
        first = self.rank * self.batch_size
        for step in range(self.start_step, self.total_steps):
            yield from range(step * global_batch + first, step * global_batch + first + self.batch_size)

    def __len__(self) -> int:
        return max(self.total_steps - self.start_step, 0) * self.batch_size


def make_loader(
    task: PretextTask, seed: int, start_step: int, total_steps: int, batch_size: int, num_workers: int, rank: int = 0, world_size: int = 1, pin_memory: bool = False
) -> DataLoader:
    """A loader yielding one collated batch per step from ``start_step`` on."""
    return DataLoader(
        StepDataset(task, seed, batch_size * world_size),
        batch_size=batch_size,
        sampler=StepSampler(start_step, total_steps, batch_size, rank, world_size),
        num_workers=num_workers,
        pin_memory=pin_memory,
        # Workers read mmap'd images; a few batches in flight hide read latency.
        prefetch_factor=2 if num_workers else None,
        persistent_workers=False,
        collate_fn=torch.utils.data.default_collate,
    )
