from __future__ import annotations

import h5py
import nibabel as nib
import numpy as np
import pytest

from mass_core.proposals.exchange import (
    export_mass_layout,
    import_mass_layout,
    import_masks,
    layer_masks,
    read_mask_file,
)
from mass_core.proposals.store import ProposalStore

from proposal_fixtures import block_store  # noqa: F401  (fixture)


def test_export_then_import_gives_identical_masks(block_store, tmp_path):
    directory, maps = block_store
    image = np.random.default_rng(0).normal(size=maps.shape[1:]).astype(np.float32)
    np.save(tmp_path / "image.npy", image)
    h5 = export_mass_layout(["case_a"], [tmp_path / "image.npy"], [directory], tmp_path / "mass")
    np.testing.assert_array_equal(np.load(tmp_path / "mass" / "case_a_image.npy"), image)
    original = ProposalStore(directory)
    expected = original.masks(original.table["proposal_id"].to_numpy())
    with h5py.File(h5, "r") as f:
        exported = f["case_a/auto_masks"][()]
    assert exported.dtype == np.uint8 and exported.shape == expected.shape
    np.testing.assert_array_equal(exported.astype(bool), expected)

    imported = import_mass_layout(h5, "case_a", tmp_path / "back", spacing=original.spacing)
    store = ProposalStore(tmp_path / "back")
    np.testing.assert_array_equal(store.masks(store.table["proposal_id"].to_numpy()), expected)
    assert len(imported.table) == len(original.table)
    # A second round trip is byte-identical.
    h5_again = export_mass_layout(["case_a"], [tmp_path / "image.npy"], [tmp_path / "back"], tmp_path / "again")
    with h5py.File(h5_again, "r") as f:
        np.testing.assert_array_equal(f["case_a/auto_masks"][()], exported)


def test_layer_masks_packs_overlapping_masks_first_fit():
    masks = np.zeros((4, 6, 6, 6), bool)
    masks[0, :3] = True
    masks[1, 2:5] = True  # overlaps 0
    masks[2, 5:] = True  # fits beside 0
    masks[3, 0, 0, 0] = True  # overlaps 0 and 1's layer is free there
    layers = layer_masks(masks)
    maps, members = layers.label_maps, layers.members
    assert maps.shape[0] == 2
    np.testing.assert_array_equal(members[0], [0, 2])
    np.testing.assert_array_equal(members[1], [1, 3])
    for layer, member in zip(maps, members):
        for label, index in enumerate(member, start=1):
            np.testing.assert_array_equal(layer == label, masks[index])


def test_import_label_map_appends_to_a_store(block_store, tmp_path):
    directory, maps = block_store
    expert = np.zeros(maps.shape[1:], np.uint8)
    expert[2:6, 2:6, 2:6] = 3
    expert[10:12, 10:12, 10:12] = 7
    before = len(ProposalStore(directory).table)
    updated = import_masks(directory, expert, "external:expert")
    store = ProposalStore(directory)
    assert len(store.table) == before + 2 and store.sources[-1] == "external:expert"
    new = store.table[store.table["source"] == "external:expert"].sort_values("proposal_id")
    np.testing.assert_array_equal(store.masks(new["proposal_id"]), [expert == 3, expert == 7])
    np.testing.assert_array_equal(store.label_maps()[:2], maps)  # earlier maps untouched
    assert updated.table["proposal_id"].is_unique
    with pytest.raises(ValueError, match="grid"):
        import_masks(directory, expert[:-1], "external:bad")


def test_read_mask_file_reorients_nifti_to_ras(tmp_path):
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[0, 1, 2] = 1
    # An LPS-stored NIfTI (x and y flipped): read back in RAS it must match `labels`.
    affine = np.diag([-1.0, -1.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(labels[::-1, ::-1].copy(), affine), tmp_path / "m.nii.gz")
    np.testing.assert_array_equal(read_mask_file(tmp_path / "m.nii.gz"), labels)
    np.save(tmp_path / "m.npy", labels)
    np.testing.assert_array_equal(read_mask_file(tmp_path / "m.npy"), labels)
    with pytest.raises(ValueError, match="path"):
        read_mask_file(tmp_path / "m.txt")
