"""A pretext task defined outside mass_core: which of four rotations was applied to a crop.

The worked example of docs/pretraining.md ("Adding a pretext task"); the
tests register it through ``pretrain.method_modules: [toy_pretext]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from mass_core.models.encoder import EncoderConfig, ResidualEncoder
from mass_core.pretrain.mim import ImageCase, random_start
from mass_core.pretrain.run import PretextMethod
from mass_core.pretrain.sampler import read_crop, task_rng
from mass_core.pretrain.task import PretextTask

ROTATIONS = 4


class RotationNet(nn.Module):
    """The shared encoder and a linear classifier on its pooled deepest features."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.encoder = ResidualEncoder(config)
        self.head = nn.Linear(config.channels[-1], ROTATIONS)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(image)[-1].mean(dim=(2, 3, 4)))


class RotationTask(PretextTask):
    """Rotate a cubic crop by k quarter turns in the X-Y plane and predict k."""

    method: ClassVar[str] = "rotation"

    def __init__(self, cases: Sequence[ImageCase], encoder: EncoderConfig) -> None:
        self.cases = list(cases)
        self.encoder = encoder
        # Two deepest-level voxels per axis: the smallest crop that still pools over positions.
        self.size = (2 * encoder.downsampling_factor,) * 3

    def model_config(self) -> dict[str, Any]:
        return {"encoder": self.encoder.to_dict()}

    def build_model(self) -> RotationNet:
        return RotationNet(self.encoder)

    def sample(self, seed: int, step: int, index: int) -> dict[str, Any]:
        rng = task_rng(seed, step, index)
        image = self.cases[int(rng.integers(len(self.cases)))].open()
        crop = read_crop(image, random_start(rng, image.shape, self.size), self.size).astype(np.float32)
        turns = int(rng.integers(ROTATIONS))
        return {"image": np.ascontiguousarray(np.rot90(crop, turns, axes=(0, 1)))[None], "turns": turns}

    def make_batch(self, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        return {key: value.to(device) for key, value in batch.items()}

    def compute_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss": nn.functional.cross_entropy(model(batch["image"].float()).float(), batch["turns"])}


def _rotation_task(cases: pd.DataFrame, cfg: Mapping[str, Any], sources: Sequence[tuple[Path, Path]]) -> RotationTask:
    images = [ImageCase(row.case_id, Path(row.image)) for row in cases.itertuples()]
    return RotationTask(images, EncoderConfig.from_dict(cfg.get("encoder", {})))


# No config section, no proposals, no in-context model, no reconstruction picture.
PRETEXT_METHODS = [PretextMethod("rotation", _rotation_task)]
