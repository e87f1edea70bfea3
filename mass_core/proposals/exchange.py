"""Import external masks into a proposal store; export to and import from the official MASS layout.

External masks (another generator's output, expert labels to mix in) come
as a label map (X, Y, Z), every positive value one mask, or as a stack of
binary masks (N, X, Y, Z) that may overlap. A stack is laid out in as few
non-overlapping label maps as first-fit allows, so that it is stored like
generated proposals; every mask keeps its own proposal id.

The official MASS training code reads ``<case>_image.npy`` and a
``dataset.h5`` holding ``<case>/auto_masks``, uint8 (N, D, H, W). Exported
masks share the image array's axis order, here (X, Y, Z) RAS, which is all
that code needs: it crops image and masks with the same indices.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import h5py
import nibabel as nib
import numpy as np

from mass_core.atomic import atomic_path
from mass_core.proposals.labels import label_dtype
from mass_core.proposals.store import LABELS_FILE, ProposalSet, ProposalStore, ids_by_scale, write_store

__all__ = [
    "MASS_DATASET_FILE",
    "MASS_MASKS_KEY",
    "MaskLayers",
    "export_mass_layout",
    "import_mass_layout",
    "import_masks",
    "layer_masks",
    "read_mask_file",
]

log = logging.getLogger(__name__)

MASS_DATASET_FILE = "dataset.h5"
MASS_MASKS_KEY = "auto_masks"


def read_mask_file(path: str | os.PathLike) -> np.ndarray:
    """Read masks from ``.npy`` (as stored) or NIfTI (reoriented to RAS, so (X, Y, Z) RAS).

    Returns:
        the integer array: a label map (X, Y, Z) or a stack (N, X, Y, Z).
    """
    path = Path(path)
    if path.suffix == ".npy":
        array = np.load(path)
    elif path.name.endswith((".nii", ".nii.gz")):
        image = nib.as_closest_canonical(nib.load(path))
        array = np.asanyarray(image.dataobj)
        if array.ndim == 4:  # NIfTI keeps a stack's mask index last
            array = np.moveaxis(array, -1, 0)
    else:
        raise ValueError(f"path must be a .npy or NIfTI file, got {path}")
    if array.dtype.kind == "f":
        if not np.array_equal(array, np.round(array)):
            raise ValueError(f"{path} holds non-integer values; masks must be integer or boolean")
        array = array.astype(np.int64)
    if array.dtype.kind not in "uib" or array.min(initial=0) < 0:
        raise ValueError(f"{path} must hold non-negative integers or booleans, got {array.dtype}")
    return array


@dataclass(frozen=True)
class MaskLayers:
    """Binary masks laid out in non-overlapping label maps.

    Attributes:
        label_maps: unsigned (L, X, Y, Z), labels ``1..n_l`` per map.
        members: per map, int64 (n_l,): the mask index of each label.
    """

    label_maps: np.ndarray
    members: list[np.ndarray]


def layer_masks(masks: np.ndarray) -> MaskLayers:
    """Lay binary masks (N, X, Y, Z) out in non-overlapping label maps, first fit; empty masks are left out."""
    if masks.ndim != 4:
        raise ValueError(f"masks must be a stack (N, X, Y, Z), got shape {masks.shape}")
    layers: list[np.ndarray] = []
    members: list[list[int]] = []
    for i in range(masks.shape[0]):
        where = np.flatnonzero(masks[i])
        if where.size == 0:
            continue
        for layer, member in zip(layers, members):
            if not layer[where].any():
                break
        else:
            layer, member = np.zeros(masks[0].size, np.int64), []
            layers.append(layer)
            members.append(member)
        member.append(i)
        layer[where] = len(member)
    dtype = label_dtype(max((len(m) for m in members), default=0))
    maps = np.zeros((len(layers),) + masks.shape[1:], dtype)
    for i, layer in enumerate(layers):
        maps[i] = layer.reshape(masks.shape[1:])
    return MaskLayers(label_maps=maps, members=[np.array(m, np.int64) for m in members])


def _as_layers(masks: np.ndarray) -> MaskLayers:
    # A label map is one layer with its own values; a stack is laid out.
    if masks.ndim == 3:
        values = np.unique(masks)
        values = values[values > 0]
        lut = np.zeros(int(masks.max(initial=0)) + 1, label_dtype(values.size))
        lut[values] = np.arange(1, values.size + 1)
        return MaskLayers(label_maps=lut[masks][None], members=[values.astype(np.int64) - 1])
    if masks.ndim == 4:
        return layer_masks(masks.astype(bool, copy=False))
    raise ValueError(f"masks must be a label map (X, Y, Z) or a stack (N, X, Y, Z), got shape {masks.shape}")


def import_masks(
    store_dir: str | os.PathLike,
    masks: np.ndarray,
    source: str,
    *,
    case_id: str | None = None,
    spacing: Sequence[float] | None = None,
) -> ProposalSet:
    """Add external masks to the proposal store in ``store_dir`` (created when absent).

    Args:
        store_dir: a proposal directory; its grid must match ``masks``.
        masks: label map (X, Y, Z) (each positive value a mask) or binary stack
            (N, X, Y, Z), on the store's (standardized) grid.
        source: recorded as the new maps' ``source`` (e.g. ``"external:totalseg"``).
        case_id, spacing: required for a new store (spacing (X, Y, Z) in mm).

    Returns:
        the updated proposals (also written). New ids continue after the
        largest existing id, in the order of the stack or of the label values.
    """
    store_dir = Path(store_dir)
    if (store_dir / LABELS_FILE).is_file():
        current = ProposalStore(store_dir).to_proposal_set()
    else:
        if case_id is None or spacing is None:
            raise ValueError(f"case_id and spacing are required to create a store in {store_dir}")
        empty = np.zeros((0,) + masks.shape[-3:], np.uint8)
        current = ProposalSet.from_label_maps(case_id, spacing, empty, [], [])
    grid = current.label_maps.shape[1:]
    if masks.shape[-3:] != grid:
        raise ValueError(f"masks of shape {masks.shape} do not match the store's grid {grid} ({current.case_id!r})")
    layers = _as_layers(masks)
    new_maps, members = layers.label_maps, layers.members
    skipped = (masks.shape[0] if masks.ndim == 4 else 0) - sum(m.size for m in members)
    if skipped:
        log.warning("case %r: %d empty masks from %s left out", current.case_id, skipped, source)
    start = int(current.table["proposal_id"].max()) + 1 if len(current.table) else 0
    old_ids = ids_by_scale(current.table, current.label_maps.shape[0])
    dtype = np.result_type(current.label_maps.dtype, new_maps.dtype)
    merged = ProposalSet.from_label_maps(
        current.case_id,
        current.spacing,
        np.concatenate([current.label_maps.astype(dtype), new_maps.astype(dtype)]),
        list(current.sources) + [source] * len(members),
        list(current.scale_params) + [float("nan")] * len(members),
        proposal_ids=old_ids + [start + m for m in members],
    )
    write_store(store_dir, merged)
    return merged


def export_mass_layout(
    case_ids: Sequence[str],
    image_paths: Sequence[str | os.PathLike],
    store_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
) -> Path:
    """Write the official MASS training layout for a dataset.

    Per case ``<out_dir>/<case>_image.npy`` (the standardized image, copied)
    and in ``<out_dir>/dataset.h5`` the dataset ``<case>/auto_masks``, uint8
    (N, X, Y, Z), one mask per proposal in proposal-id order.

    Returns:
        the path of ``dataset.h5``.
    """
    if not len(case_ids) == len(image_paths) == len(store_dirs):
        raise ValueError("case_ids, image_paths and store_dirs must have the same length")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / MASS_DATASET_FILE) as tmp, h5py.File(tmp, "w") as f:
        for case_id, image_path, store_dir in zip(case_ids, image_paths, store_dirs):
            store = ProposalStore(store_dir)
            masks = store.masks(store.table["proposal_id"].to_numpy()).astype(np.uint8)
            store.close()
            chunks = (1,) + tuple(min(64, n) for n in masks.shape[1:]) if masks.shape[0] else None
            f.create_dataset(f"{case_id}/{MASS_MASKS_KEY}", data=masks, chunks=chunks, compression="gzip")
            with atomic_path(out_dir / f"{case_id}_image.npy") as image_tmp:
                shutil.copyfile(image_path, image_tmp)
    return out_dir / MASS_DATASET_FILE


def import_mass_layout(
    dataset_h5: str | os.PathLike, case_id: str, store_dir: str | os.PathLike, spacing: Sequence[float]
) -> ProposalSet:
    """Import ``<case_id>/auto_masks`` of an official MASS ``dataset.h5`` into a new proposal store.

    Args:
        dataset_h5: the official file.
        case_id: the case's group in it.
        store_dir: where to write the store (an existing store there is replaced).
        spacing: voxel spacing (X, Y, Z) in mm of the case's image.
    """
    with h5py.File(dataset_h5, "r") as f:
        key = f"{case_id}/{MASS_MASKS_KEY}"
        if key not in f:
            raise KeyError(f"{dataset_h5} has no {key}")
        masks = f[key][()]
    store_dir = Path(store_dir)
    (store_dir / LABELS_FILE).unlink(missing_ok=True)
    return import_masks(store_dir, masks, "mass_h5", case_id=case_id, spacing=spacing)
