from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mass_core.pretrain.mim import ImageCase
from mass_core.pretrain.mim_hier import MimHierConfig, MimHierTask
from mass_core.pretrain.trainer import TrainConfig, train

from tiny_models import TINY_ENCODER


@pytest.fixture(scope="module")
def ramp_image(tmp_path_factory):
    # Every voxel distinct, so a misplaced box cannot match by accident.
    path = tmp_path_factory.mktemp("mim_hier") / "ramp.npy"
    x, y, z = np.meshgrid(np.arange(40), np.arange(36), np.arange(44), indexing="ij")
    np.save(path, (x * 1.0 + y * 100.0 + z * 10_000.0).astype(np.float32) / 1e5)
    return path


def _task(path, **kwargs) -> MimHierTask:
    return MimHierTask([ImageCase("ramp", path)], MimHierConfig.from_config(TINY_ENCODER, {"crop_size": [16, 16, 16]} | kwargs))


@pytest.mark.parametrize("levels, flip", [(2, False), (2, True), (3, True)])
def test_finer_level_is_the_box_of_the_coarser_one_at_twice_the_resolution(ramp_image, levels, flip):
    task = _task(ramp_image, levels=levels, flip=flip)
    for step in range(4):
        sample = task.sample(0, step, 0)
        images, boxes = sample["images"][:, 0], sample["boxes"]
        assert images.shape == (levels, 16, 16, 16) and boxes.shape == (levels - 1, 3)
        for level in range(levels - 1):
            start = boxes[level] * 4  # feature cells of the coarser level -> its voxels
            coarse_box = images[level][tuple(slice(s, s + 8) for s in start)]
            fine_down = images[level + 1].reshape(8, 2, 8, 2, 8, 2).mean(axis=(1, 3, 5))
            np.testing.assert_allclose(fine_down, coarse_box, rtol=1e-5, atol=1e-6)


def test_box_pooling_matches_slicing(ramp_image):
    task = _task(ramp_image)
    model = task.build_model().eval()
    torch.manual_seed(0)
    images = torch.randn(2, 2, 1, 16, 16, 16)
    masks = torch.zeros(2, 2, 1, 16, 16, 16, dtype=torch.bool)
    boxes = torch.tensor([[[0, 1, 2]], [[2, 0, 1]]])
    with torch.no_grad():
        out = model(images, masks, boxes)
        deepest = model.head_norm(model.encoder(images[:, 0].reshape(2, 1, 16, 16, 16))[-1])
        for b in range(2):
            x, y, z = boxes[b, 0].tolist()
            pooled = deepest[b, :, x : x + 2, y : y + 2, z : z + 2].mean(dim=(1, 2, 3))
            torch.testing.assert_close(out.coarse[b, 0], pooled, rtol=1e-5, atol=1e-5)


def test_crop_must_fit_nested_boxes():
    with pytest.raises(ValueError, match="twice the downsampling factor"):
        MimHierConfig.from_config(TINY_ENCODER, {"crop_size": [12, 12, 12], "patch_size": 4})


@pytest.mark.slow
def test_both_losses_fall(tmp_path):
    from mass_core.phantom import PhantomParams, make_phantom

    paths = []
    for index in range(3):
        hu = np.clip(make_phantom(index, PhantomParams(shape=(48, 48, 32), spacing_mm=(2.5, 2.5, 4.0))).image_hu.astype(np.float32), -991, 500)
        np.save(tmp_path / f"{index}.npy", ((hu - hu.mean()) / hu.std()).astype(np.float32))
        paths.append(ImageCase(str(index), tmp_path / f"{index}.npy"))
    task = MimHierTask(paths, MimHierConfig.from_config(TINY_ENCODER, {"crop_size": [16, 16, 16]}))
    train(task, TrainConfig(steps=80, batch_size=4, optimizer="adamw", checkpoint_every=1000, log_every=10), tmp_path / "run")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    for column in ("reconstruction", "alignment"):
        assert metrics[column].iloc[-2:].mean() < metrics[column].iloc[:2].mean(), column
