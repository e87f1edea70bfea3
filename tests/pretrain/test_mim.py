from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mass_core.models.encoder import EncoderConfig
from mass_core.models.reconstruction import ReconstructionNet
from mass_core.phantom import PhantomParams, make_phantom
from mass_core.pretrain.checkpoint import load_checkpoint
from mass_core.pretrain.mim import ImageCase, MimConfig, MimTask, masked_error, score_reconstruction
from mass_core.pretrain.trainer import TrainConfig, train

from tiny_models import TINY_ENCODER


@pytest.fixture(scope="module")
def phantom_images(tmp_path_factory):
    """Five small z-scored phantom volumes (CT window as in standardize)."""
    root = tmp_path_factory.mktemp("mim")
    paths = []
    for index in range(5):
        hu = make_phantom(index, PhantomParams(shape=(48, 48, 32), spacing_mm=(2.5, 2.5, 4.0))).image_hu.astype(np.float32)
        clipped = np.clip(hu, -991, 500)
        np.save(root / f"{index}.npy", ((clipped - clipped.mean()) / clipped.std()).astype(np.float32))
        paths.append(root / f"{index}.npy")
    return paths


def _config(**kwargs) -> MimConfig:
    return MimConfig.from_config(TINY_ENCODER, {"crop_size": [16, 16, 16]} | kwargs)


def test_patch_defaults_to_downsampling_factor():
    assert _config().patch_size == 4 and _config(patch_size=8).patch_size == 8


@pytest.mark.parametrize("kwargs, message", [({"crop_size": [18, 16, 16]}, "crop_size"), ({"mask_ratio": 1.0}, "mask_ratio"), ({"loss": "huber"}, "loss")])
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _config(**kwargs)


def test_samples_are_keyed_by_seed_step_index(phantom_images):
    task = MimTask([ImageCase(str(i), p) for i, p in enumerate(phantom_images)], _config())
    a, b, c = task.sample(0, 5, 1), task.sample(0, 5, 1), task.sample(0, 5, 2)
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["mask"], b["mask"])
    assert not np.array_equal(a["image"], c["image"])
    assert a["image"].shape == a["mask"].shape == (1, 16, 16, 16)
    assert a["mask"].mean() == pytest.approx(round(0.7 * 64) / 64)


def test_loss_counts_hidden_voxels_only():
    target = torch.zeros(1, 1, 4, 4, 4)
    mask = torch.zeros(1, 1, 4, 4, 4, dtype=torch.bool)
    mask[..., :2] = True
    prediction = torch.where(mask, torch.tensor(2.0), torch.tensor(100.0))
    assert masked_error(prediction, target, mask, "l1").item() == pytest.approx(2.0)
    assert masked_error(prediction, target, mask, "l2").item() == pytest.approx(4.0)


@pytest.mark.slow
def test_mim_learns_to_beat_the_mean_on_held_out_phantoms(phantom_images, tmp_path):
    # A little wider than the shared tiny encoder: enough to learn in ~20 s on one core.
    config = MimConfig.from_config({"channels": [8, 16, 32]}, {"crop_size": [16, 16, 16]})
    task = MimTask([ImageCase(str(i), p) for i, p in enumerate(phantom_images[:4])], config)
    train(task, TrainConfig(steps=200, batch_size=4, optimizer="adamw", checkpoint_every=1000, log_every=10), tmp_path)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics["loss"].iloc[-3:].mean() < 0.7 * metrics["loss"].iloc[:2].mean()
    model = ReconstructionNet(config.model)
    model.load_state_dict(load_checkpoint(tmp_path / "final.pt", method="mim").ema)
    score = score_reconstruction(model, phantom_images[4:], config, crops_per_image=16)
    assert score.model_l1 < 0.8 * score.mean_l1, score
