from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest

from mass_core.proposals.store import LABELS_FILE, TABLE_COLUMNS, ProposalSet, ProposalStore

from proposal_fixtures import block_store  # noqa: F401  (fixture)

CROPS = [
    (slice(0, 20), slice(0, 18), slice(0, 16)),
    (slice(3, 11), slice(5, 17), slice(2, 9)),
    (slice(19, 20), slice(0, 1), slice(15, 16)),
]


def test_table_describes_every_proposal(block_store):
    directory, maps = block_store
    store = ProposalStore(directory)
    table = store.table
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert len(table) == int(maps[0].max()) + int(maps[1].max())
    assert table["proposal_id"].is_unique
    row = table[(table["scale"] == 1) & (table["label"] == 1)].iloc[0]
    mask = maps[1] == 1
    assert row["voxels"] == mask.sum()
    assert row["volume_mm3"] == pytest.approx(mask.sum() * 1.5 * 1.5 * 2.0)
    where = np.argwhere(mask)
    assert [row["x0"], row["x1"], row["y0"], row["y1"], row["z0"], row["z1"]] == [
        where[:, 0].min(), where[:, 0].max() + 1, where[:, 1].min(), where[:, 1].max() + 1,
        where[:, 2].min(), where[:, 2].max() + 1,
    ]
    assert store.shape == maps.shape[1:] and store.spacing == (1.5, 1.5, 2.0) and store.case_id == "case_a"
    assert store.sources == ("fh3d", "fh3d") and store.scale_params == (1.0, 4.0)


@pytest.mark.parametrize("crop", CROPS)
def test_crop_reads_equal_slicing_the_full_map(block_store, crop):
    directory, maps = block_store
    store = ProposalStore(directory)
    np.testing.assert_array_equal(store.read_crop(crop), maps[(slice(None),) + crop])
    np.testing.assert_array_equal(store.label_maps(), maps)


@pytest.mark.parametrize("crop", CROPS)
def test_crop_runs_count_and_paint_like_the_label_maps(block_store, crop):
    directory, maps = block_store
    store = ProposalStore(directory)
    # Masks painted into a crop padded by (2, 0, 3) voxels before it, as a training crop that leaves the volume.
    pad = np.array([2, 0, 3])
    corner = np.array([sl.start for sl in crop])
    runs = store.crop_runs(crop, origin=corner - pad)
    for s, counts in enumerate(runs.counts()):
        assert counts.size == maps[s].max() + 1
        np.testing.assert_array_equal(counts, np.bincount(maps[s][crop].ravel(), minlength=counts.size))
    # A label inside the crop where there is one, and labels that may lie outside it.
    chosen = [(1, int(maps[1][crop].max(initial=1))), (0, 1), (1, int(maps[1].max()))]
    size = [sl.stop - sl.start for sl in crop]
    painted = runs.paint(chosen, np.zeros((3, *(pad + size + 1)), np.uint8))
    inside = tuple(slice(p, p + n) for p, n in zip(pad, size))
    for mask, (scale, label) in zip(painted, chosen):
        np.testing.assert_array_equal(mask[inside], maps[scale][crop] == label)
        assert mask.sum() == mask[inside].sum()  # nothing outside the crop


def test_runs_compressed_by_another_tool_read_the_same(block_store):
    # write_store's contiguous runs are memory-mapped; chunked, compressed ones (e.g. after h5repack) are read.
    directory, maps = block_store
    with h5py.File(directory / LABELS_FILE, "a") as f:
        for group in f.values():
            for name in ("run_end", "run_value"):
                data = group[name][()]
                del group[name]
                group.create_dataset(name, data=data, chunks=(64,), compression="gzip")
    np.testing.assert_array_equal(ProposalStore(directory).read_crop(CROPS[1]), maps[(slice(None),) + CROPS[1]])


def test_a_pickled_store_maps_its_file_again(block_store):
    # Spawned data-loader workers receive the store pickled: without copies of the mapped runs.
    directory, maps = block_store
    store = ProposalStore(directory)
    unread = len(pickle.dumps(store))
    store.read_crop(CROPS[0])
    copy = pickle.loads(pickle.dumps(store))
    assert len(pickle.dumps(store)) == unread
    np.testing.assert_array_equal(copy.read_crop(CROPS[1]), maps[(slice(None),) + CROPS[1]])


def test_whole_masks_by_id_and_bad_slices(block_store):
    directory, maps = block_store
    store = ProposalStore(directory)
    ids = store.table["proposal_id"].to_numpy()[[5, 0, -1]]
    masks = store.masks(ids)
    for mask, pid in zip(masks, ids):
        row = store.table.set_index("proposal_id").loc[pid]
        np.testing.assert_array_equal(mask, maps[row["scale"]] == row["label"])
    with pytest.raises(ValueError, match="ids"):
        store.masks([10**6])
    with pytest.raises(ValueError, match="slices"):
        store.read_crop((slice(0, 4), slice(0, 4)))
    with pytest.raises(ValueError, match="slices"):
        store.read_crop((slice(0, 4, 2), slice(0, 4), slice(0, 4)))
    with pytest.raises(ValueError, match="slices"):
        store.read_crop((slice(10, 30), slice(0, 4), slice(0, 4)))


def test_from_label_maps_rejects_gaps_and_signed_maps():
    maps = np.zeros((1, 4, 4, 4), np.uint8)
    maps[0, 0, 0, 0] = 2
    with pytest.raises(ValueError, match="consecutive"):
        ProposalSet.from_label_maps("c", (1, 1, 1), maps, ["x"], [1.0])
    with pytest.raises(ValueError, match="unsigned"):
        ProposalSet.from_label_maps("c", (1, 1, 1), maps.astype(np.int16), ["x"], [1.0])


def test_store_reopens_its_file_in_a_forked_worker(block_store):
    directory, maps = block_store
    store = ProposalStore(directory)
    store.read_crop(CROPS[1])
    store._pid = -1  # what a forked data-loader worker sees: another process id
    np.testing.assert_array_equal(store.read_crop(CROPS[1]), maps[(slice(None),) + CROPS[1]])
    store.close()
