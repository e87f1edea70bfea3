"""Tiny standardized datasets and checkpoints for the evaluation tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mass_core.labels import IGNORE_LABEL, foreground_classes
from mass_core.manifest import SplitParams, build_manifest
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
    """Standardized case folders, as the standardize stage leaves them, and their ``manifest.parquet``.

    The manifest is built by :func:`mass_core.manifest.build_manifest` from
    each case's ``meta.json`` and a case table fixing the split and the class
    label (seed parity), so a change of the manifest's columns reaches these
    tests. ``ignored_slices``: the last axial slices of every label map are
    ignored voxels (as the standardize stage stores them).
    """
    spacing = [2.0, 2.0, 3.0]
    metas, table = [], []
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
            meta = {"status": "ok", "case_id": case_id, "modality": "CT", "shape": list(image.shape), "spacing": spacing,
                    "original": {"spacing": spacing}, "label_classes": foreground_classes(label),
                    "ignored_voxels": int(np.count_nonzero(label == IGNORE_LABEL)),
                    "source": {"image": f"raw/{case_id}.nii.gz", "label": f"raw/{case_id}_label.nii.gz"}}
            (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
            metas.append(folder / "meta.json")
            table.append({"case_id": case_id, "split": split, "class_label": seed % 2})
    pd.DataFrame(table).to_csv(root / "cases.csv", index=False)
    manifest = root / "manifest.parquet"
    build_manifest(metas, manifest, root / "skipped.csv", SplitParams(), root / "cases.csv")
    return manifest


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """Manifest of 4 train, 2 val and 2 test synthetic cases (both classes in every split)."""
    return write_dataset(tmp_path / "data", {"train": [0, 1, 2, 3], "val": [4, 5], "test": [6, 7]})


def save_mass_checkpoint(path: Path, seed: int = 0, config: InContextConfig = TINY_INCONTEXT,
                         standardization: list[dict] | None = None, crop_size: list[int] | None = None) -> Path:
    """A randomly initialised tiny MASS training checkpoint (``final.pt`` format), with the given standardization records
    and training crop (none by default, like a checkpoint written before they were recorded)."""
    torch.manual_seed(seed)
    weights = InContextSegmenter(config).state_dict()
    save_checkpoint(path, TrainingState(method="mass", model_config=config.to_dict(), train_config={}, step=0,
                                        model=weights, ema=weights, ema_updates=0, optimizer={}, scheduler={}, metrics=[],
                                        standardization=standardization or [], crop_size=crop_size or []))
    return path
