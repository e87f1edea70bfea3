from __future__ import annotations

import pytest
import torch

from mass_core.models.encoder import EncoderConfig
from mass_core.models.incontext import InContextConfig
from mass_core.pretrain.mass import MassConfig
from mass_core.pretrain.sampler import SamplerConfig
from mass_core.pretrain.synthetic import synthetic_case

from tiny_models import TINY_ENCODER, TINY_MASS


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_cases():
    return [synthetic_case(seed, (24, 24, 24), n_objects=6, case_id=f"c{seed}") for seed in range(3)]


@pytest.fixture
def tiny_sections() -> dict:
    """The tiny model as the ``pretrain`` config's ``encoder`` and ``mass`` sections."""
    return {"encoder": TINY_ENCODER, "mass": TINY_MASS}


@pytest.fixture
def tiny_mass_config() -> MassConfig:
    return MassConfig(
        model=InContextConfig(EncoderConfig(**TINY_ENCODER), **TINY_MASS["model"]),
        sampler=SamplerConfig(**TINY_MASS["sampler"]),
    )
