"""Tiny standardized datasets and checkpoints for the evaluation tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mass_core.labels import IGNORE_LABEL, foreground_classes
from mass_core.models.encoder import EncoderConfig
from mass_core.models.incontext import InContextConfig, InContextSegmenter
from mass_core.pretrain.checkpoint import TrainingState, save_checkpoint

# Downsampling factor 4: crops and windows of 16 voxels work.
TINY_ENCODER = EncoderConfig(channels=(4, 8, 8), blocks_per_stage=1)
TINY_INCONTEXT = InContextConfig(TINY_ENCODER, token_scales=2, learned_tokens=1, heads=2)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def synthetic_case(seed: int, shape=(24, 24, 20)) -> tuple[np.ndarray, np.ndarray]:
    """A noisy volume with a bright box (class 1) and, for odd seeds, a dark ball (class 2)."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    corner = rng.integers(2, 8, size=3)
    label[corner[0]:corner[0] + 10, corner[1]:corner[1] + 8, corner[2]:corner[2] + 6] = 1
    if seed % 2:
        grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
        centre = np.array(shape) - 6
        label[np.linalg.norm(grid - centre, axis=-1) <= 3] = 2
    image = rng.normal(0, 0.3, shape).astype(np.float32) + np.array([0.0, 2.0, -2.0], np.float32)[label]
    return image, label


def write_dataset(root: Path, splits: dict[str, list[int]], ignored_slices: int = 0) -> Path:
    """Standardized cases plus a ``manifest.parquet`` with the columns the evaluation reads.

    ``ignored_slices``: the last axial slices of every label map are ignored voxels (as the standardize stage stores them).
    """
    rows = []
    for split, seeds in splits.items():
        for seed in seeds:
            case_id = f"case_{seed:02d}"
            folder = root / "standardized" / case_id
            folder.mkdir(parents=True)
            image, label = synthetic_case(seed)
            if ignored_slices:
                label = label.astype(np.uint16)
                label[:, :, -ignored_slices:] = IGNORE_LABEL
            np.save(folder / "image.npy", image)
            np.save(folder / "label.npy", label)
            rows.append({"case_id": case_id, "image": str(folder / "image.npy"), "label": str(folder / "label.npy"),
                         "meta": str(folder / "meta.json"), "modality": "CT", "split": split, "class_label": int(seed % 2),
                         "label_classes": foreground_classes(label),
                         "shape_x": image.shape[0], "shape_y": image.shape[1], "shape_z": image.shape[2],
                         "spacing_x": 2.0, "spacing_y": 2.0, "spacing_z": 3.0})
    manifest = root / "manifest.parquet"
    pd.DataFrame(rows).to_parquet(manifest, index=False)
    return manifest


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """Manifest of 4 train, 2 val and 2 test synthetic cases (both classes in every split)."""
    return write_dataset(tmp_path / "data", {"train": [0, 1, 2, 3], "val": [4, 5], "test": [6, 7]})


def save_mass_checkpoint(path: Path, seed: int = 0, config: InContextConfig = TINY_INCONTEXT) -> Path:
    """A randomly initialised tiny MASS training checkpoint (``final.pt`` format)."""
    torch.manual_seed(seed)
    weights = InContextSegmenter(config).state_dict()
    save_checkpoint(path, TrainingState(method="mass", model_config=config.to_dict(), train_config={}, step=0,
                                        model=weights, ema=weights, ema_updates=0, optimizer={}, scheduler={}, metrics=[]))
    return path
