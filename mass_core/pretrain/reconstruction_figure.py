"""Picture of what a masked-image-modelling checkpoint reconstructs (MIM, MiM).

Rows: three orthogonal mid-slices of a held-out (validation) crop. Columns:
the input, what the encoder sees (hidden patches replaced by the mask token),
the reconstruction, and the reconstruction pasted into the hidden patches
only. The scores in the title compare the hidden-voxel L1 error with the
crop-mean predictor.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from mass_core.atomic import write_with  # noqa: E402
from mass_core.manifest import read_manifest  # noqa: E402
from mass_core.models.reconstruction import ReconstructionConfig, ReconstructionNet  # noqa: E402
from mass_core.pretrain.checkpoint import load_checkpoint  # noqa: E402
from mass_core.pretrain.masking import patch_mask  # noqa: E402
from mass_core.pretrain.mim import MimConfig, masked_error, random_start  # noqa: E402
from mass_core.pretrain.run import PRETEXT_TASKS  # noqa: E402
from mass_core.pretrain.sampler import read_crop, task_rng  # noqa: E402

__all__ = ["reconstruction_figure"]


def _mid_slices(volume: np.ndarray) -> list[np.ndarray]:
    x, y, z = (n // 2 for n in volume.shape)
    return [volume[:, :, z].T, volume[:, y, :].T, volume[x, :, :].T]


@torch.no_grad()
def reconstruction_figure(checkpoint: str | os.PathLike, manifest: str | os.PathLike, out_png: str | os.PathLike,
                          mask_ratio: float, seed: int = 0) -> Path:
    """Draw the EMA model of ``checkpoint`` reconstructing a validation crop into ``out_png``.

    Args:
        checkpoint: ``final.pt`` of a run whose registry entry has ``reconstruction_figure`` (``mim``, ``mim_hier``).
        manifest: the dataset manifest; the first validation case is shown
            (the first training case when there is no validation split).
        mask_ratio: share of patches hidden in the picture.
    """
    state = load_checkpoint(checkpoint)
    drawable = [name for name, entry in PRETEXT_TASKS.items() if entry.reconstruction_figure]
    if state.method not in drawable:
        raise ValueError(f"{checkpoint} was written by {state.method!r}; reconstruction pictures exist for {' and '.join(drawable)} only")
    model_config = ReconstructionConfig.from_dict(state.model_config)
    model = ReconstructionNet(model_config)
    own = set(model.state_dict())
    model.load_state_dict({k: v for k, v in state.ema.items() if k in own})
    model.eval()
    cases = read_manifest(manifest, split="val")
    if cases.empty:
        cases = read_manifest(manifest, split="train")
    image = np.load(cases["image"].iloc[0], mmap_mode="r")
    factor = model_config.encoder.downsampling_factor
    size = tuple(max(factor, (min(n, 64) // factor) * factor) for n in image.shape)
    config = MimConfig(model=model_config, crop_size=size, mask_ratio=mask_ratio)
    rng = task_rng(seed, 0, 0)
    crop = torch.from_numpy(read_crop(image, random_start(rng, image.shape, size), size).astype(np.float32))[None, None]
    mask = torch.from_numpy(patch_mask(rng, size, config.patch_size, mask_ratio))[None, None]
    prediction = model(crop, mask).reconstruction
    model_l1 = masked_error(prediction, crop, mask, "l1").item()
    mean_l1 = masked_error(crop[~mask].mean().expand_as(crop), crop, mask, "l1").item()

    volumes = {
        "input": crop[0, 0].numpy(),
        "encoder input": torch.where(mask, model.mask_token, crop)[0, 0].numpy(),
        "reconstruction": prediction[0, 0].numpy(),
        "hidden patches filled": torch.where(mask, prediction, crop)[0, 0].numpy(),
    }
    low, high = np.percentile(volumes["input"], [1, 99])
    fig, axes = plt.subplots(3, len(volumes), figsize=(3 * len(volumes), 9))
    for col, (title, volume) in enumerate(volumes.items()):
        for row, plane in enumerate(_mid_slices(volume)):
            axes[row, col].imshow(plane, cmap="gray", vmin=low, vmax=high, origin="lower")
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
        axes[0, col].set_title(title)
    for row, name in enumerate(("axial", "coronal", "sagittal")):
        axes[row, 0].set_ylabel(name)
    fig.suptitle(f"{state.method}, step {state.step}, case {cases['case_id'].iloc[0]}: hidden-voxel L1 {model_l1:.3f} (crop mean: {mean_l1:.3f})")
    fig.tight_layout()
    out_png = Path(out_png)
    write_with(out_png, lambda tmp: fig.savefig(tmp, dpi=80))
    plt.close(fig)
    return out_png
