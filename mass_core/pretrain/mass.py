"""The MASS pretext task: in-context segmentation of automatically proposed masks.

Glues :class:`~mass_core.pretrain.sampler.TaskSampler` (CPU, data-loader
workers), :func:`~mass_core.pretrain.augment.warp_query` (device),
:class:`~mass_core.models.incontext.InContextSegmenter` and
:func:`~mass_core.pretrain.losses.mass_loss` into a
:class:`~mass_core.pretrain.task.PretextTask` for the shared trainer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch

from mass_core.config_section import from_section
from mass_core.models.incontext import InContextConfig, InContextSegmenter
from mass_core.pretrain.augment import warp_query
from mass_core.pretrain.distributed import in_process_group, mean_over_process_group
from mass_core.pretrain.heldout import HeldOutCheck, HeldOutConfig
from mass_core.pretrain.losses import mass_loss
from mass_core.pretrain.sampler import CaseArrays, CaseSource, SamplerConfig, TaskSampler
from mass_core.pretrain.task import PretextTask
from mass_core.proposals.store import ProposalStore

__all__ = ["MassBatch", "MassConfig", "MassTask", "StoreCase"]


@dataclass(frozen=True)
class MassConfig:
    """Everything MASS-specific (config keys ``pretrain.encoder`` and ``pretrain.mass``).

    Args:
        model: the in-context network's shape.
        sampler: task construction and augmentation.
        alpha_range: clamp range of the adaptive Tversky alpha (the paper: 0.2, 0.8).
        heldout: size of the held-out in-context check (run every ``train.validate_every`` steps).
    """

    model: InContextConfig = field(default_factory=InContextConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    alpha_range: tuple[float, float] = (0.2, 0.8)
    heldout: HeldOutConfig = field(default_factory=HeldOutConfig)

    def __post_init__(self) -> None:
        factor = self.model.encoder.downsampling_factor
        if any(size % factor for size in self.sampler.crop_size):
            raise ValueError(f"sampler.crop_size {self.sampler.crop_size} must be a multiple of the encoder's downsampling factor {factor}")
        object.__setattr__(self, "alpha_range", tuple(float(a) for a in self.alpha_range))

    @classmethod
    def from_config(cls, encoder: Mapping[str, Any], mass: Mapping[str, Any]) -> MassConfig:
        """Build from the config sections ``pretrain.encoder`` and ``pretrain.mass`` (keys ``model``, ``sampler``, ``alpha_range``, ``heldout``)."""
        return from_section(cls, mass, "pretrain.mass", {"model": InContextConfig.from_config(encoder, mass.get("model", {}))})


class StoreCase:
    """A standardized case (``image.npy``, mmap'd) with its proposal store directory.

    The store object is created on first use and kept: it reopens its HDF5
    file in each process, so forked data-loader workers can share it.

    Args:
        case_id: the case.
        image: path of its float32 ``(X, Y, Z)`` image.
        proposals: its proposal store directory (``proposals.h5`` + ``proposals.parquet``).
    """

    def __init__(self, case_id: str, image: str | os.PathLike, proposals: str | os.PathLike) -> None:
        self.case_id = case_id
        self.image = Path(image)
        self.proposals = Path(proposals)
        self._store: ProposalStore | None = None

    def open(self) -> CaseArrays:
        if self._store is None:
            self._store = ProposalStore(self.proposals)
        image = np.load(self.image, mmap_mode="r")
        if tuple(image.shape) != self._store.shape:
            raise ValueError(f"case {self.case_id!r}: image {self.image} has shape {image.shape}, proposals {self._store.shape}")
        return CaseArrays(image=image, proposals=self._store, case_id=self.case_id)


@dataclass
class MassBatch:
    """A training batch on the device.

    Attributes:
        query: ``(B, 1, X, Y, Z)`` warped query images.
        reference: ``(B, 1, X, Y, Z)`` reference images.
        reference_masks: ``(B, K, X, Y, Z)`` float {0, 1}.
        targets: ``(B, K, X, Y, Z)`` float {0, 1}, warped like the query.
        valid: ``(B, K)`` bool.
    """

    query: torch.Tensor
    reference: torch.Tensor
    reference_masks: torch.Tensor
    targets: torch.Tensor
    valid: torch.Tensor


class MassTask(PretextTask):
    """MASS for the shared trainer.

    Args:
        cases: training cases (any :class:`~mass_core.pretrain.sampler.CaseSource`).
        config: model, sampler and loss settings.
        checks: held-out checks (one per dataset with val cases); their scores are averaged.
        weights: per-case draw weights (the datasets' ``pretrain_weight``); ``None`` draws uniformly.
    """

    method: ClassVar[str] = "mass"

    def __init__(self, cases: Sequence[CaseSource], config: MassConfig, checks: Sequence[HeldOutCheck] = (),
                 weights: Sequence[float] | None = None) -> None:
        self.config = config
        self.sampler = TaskSampler(cases, config.sampler, weights)
        self.checks = list(checks)

    def model_config(self) -> dict[str, Any]:
        return self.config.model.to_dict()

    def crop_size(self) -> tuple[int, int, int]:
        return self.config.sampler.crop_size

    def build_model(self) -> InContextSegmenter:
        return InContextSegmenter(self.config.model)

    def sample(self, seed: int, step: int, index: int) -> dict[str, Any]:
        return self.sampler.sample(seed, step, index).to_dict()

    def make_batch(self, batch: dict[str, torch.Tensor], device: torch.device) -> MassBatch:
        def move(name: str) -> torch.Tensor:
            return batch[name].to(device, non_blocking=True)

        warped = warp_query(move("query_image"), move("query_masks"), move("query_theta"))
        return MassBatch(
            query=warped.image,
            reference=move("reference_image").float(),
            reference_masks=move("reference_masks").float(),
            targets=warped.masks,
            valid=move("valid"),
        )

    def validate(self, model: torch.nn.Module, device: torch.device, step: int) -> dict[str, float]:
        scores = [check(model, device) for check in self.checks]
        keys = sorted({key for score in scores for key in score})
        return {key: float(np.nanmean([score.get(key, np.nan) for score in scores])) for key in keys}

    def compute_loss(self, model: torch.nn.Module, batch: MassBatch) -> dict[str, torch.Tensor]:
        logits = model(batch.query, batch.reference, batch.reference_masks)
        # Under DDP the loss divides by the global batch's mask counts (see mass_loss).
        mean_over_ranks = mean_over_process_group if in_process_group() else None
        return mass_loss(logits, batch.targets, batch.valid, self.config.alpha_range, mean_over_ranks).as_dict()

