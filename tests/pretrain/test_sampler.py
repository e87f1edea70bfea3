from __future__ import annotations

import h5py
import numpy as np
import pytest

from mass_core.pretrain.augment import IntensityAugConfig, SpatialAugConfig
from mass_core.pretrain.sampler import CaseArrays, NpyCase, SamplerConfig, TaskSampler, read_crop
from mass_core.pretrain.synthetic import synthetic_case
from mass_core.proposals.store import ProposalSet, ProposalStore, write_store

PLAIN = SamplerConfig(
    crop_size=16,
    num_masks=4,
    min_mask_voxels=8,
    reference_intensity=IntensityAugConfig(probability=0),
    query_intensity=IntensityAugConfig(probability=0),
    query_spatial=SpatialAugConfig(probability=0),
)


def _box(start, size=16):
    return tuple(slice(int(s), int(s) + size) for s in start)


def test_crops_share_the_anchor_and_overlap_by_about_two_thirds(tiny_cases):
    sampler = TaskSampler(tiny_cases, SamplerConfig(crop_size=16))
    overlaps = []
    for index in range(60):
        task = sampler.sample(0, 0, index)
        for start in (task.reference_start, task.query_start):
            assert np.all((start <= task.anchor) & (task.anchor < start + 16))
            assert np.all(start >= 0) and np.all(start + 16 <= 24)  # inside the 24^3 volume
        overlaps.append(np.prod(16 - np.abs(task.reference_start - task.query_start)) / 16**3)
    assert 0.55 < np.mean(overlaps) < 0.85
    assert min(overlaps) < 0.999  # the crops do move


def test_masks_are_proposals_present_in_the_reference(tiny_cases):
    sampler = TaskSampler(tiny_cases, PLAIN)
    for index in range(20):
        task = sampler.sample(3, 7, index)
        case = tiny_cases[task.case_index]
        image_ref = read_crop(case.image, task.reference_start, (16, 16, 16))
        np.testing.assert_array_equal(task.reference_image[0], image_ref)
        assert task.valid[0] and tuple(task.mask_ids[0]) == (-1, -1)
        assert task.reference_masks[0].all() and task.query_masks[0].all()
        for k in np.flatnonzero(task.valid[1:]) + 1:
            scale, label = task.mask_ids[k]
            ref_labels = case.proposals[scale][_box(task.reference_start)]
            query_labels = case.proposals[scale][_box(task.query_start)]
            np.testing.assert_array_equal(task.reference_masks[k], ref_labels == label)
            np.testing.assert_array_equal(task.query_masks[k], query_labels == label)
            assert task.reference_masks[k].sum() >= 8
        picked = [tuple(i) for i in task.mask_ids[task.valid]]
        assert len(set(picked)) == len(picked)


def test_same_key_same_task_other_key_other_task(tiny_cases):
    sampler = TaskSampler(tiny_cases, SamplerConfig(crop_size=16))
    a, b = sampler.sample(1, 5, 2).to_dict(), sampler.sample(1, 5, 2).to_dict()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    others = [sampler.sample(*key) for key in ((2, 5, 2), (1, 6, 2), (1, 5, 3))]
    assert all(not np.array_equal(o.query_image, a["query_image"]) for o in others)


def test_augmentation_weak_on_reference_strong_on_query(tiny_cases):
    sampler = TaskSampler(tiny_cases, SamplerConfig(crop_size=16))
    changes = {"reference": [], "query": []}
    for index in range(40):
        task = sampler.sample(0, 0, index)
        case = tiny_cases[task.case_index]
        for view, start, image in (("reference", task.reference_start, task.reference_image), ("query", task.query_start, task.query_image)):
            changes[view].append(np.abs(image[0] - read_crop(case.image, start, (16, 16, 16))).mean())
    assert np.mean(changes["query"]) > 2 * np.mean(changes["reference"]) > 0
    thetas = np.stack([sampler.sample(0, 0, i).query_theta for i in range(10)])
    assert not np.allclose(thetas[:, :, :3], np.eye(3))  # the query's affine is drawn
    assert task.query_masks.dtype == np.uint8 and task.query_masks.shape == (5, 16, 16, 16)


def test_case_without_proposals_gives_only_the_full_mask():
    empty = CaseArrays(image=np.zeros((20, 20, 20), np.float32), proposals=np.zeros((2, 20, 20, 20), np.uint16))
    task = TaskSampler([empty], PLAIN).sample(0, 0, 0)
    assert task.valid.tolist() == [True, False, False, False]
    assert tuple(task.mask_ids[1]) == (-1, 0) and task.reference_masks[1:].sum() == 0


def test_volume_smaller_than_the_crop_is_zero_padded():
    image = np.ones((10, 20, 12), np.float32)
    labels = np.ones((1, 10, 20, 12), np.uint8)
    task = TaskSampler([CaseArrays(image, labels)], PLAIN).sample(0, 0, 0)
    assert task.reference_image.shape == (1, 16, 16, 16)
    assert task.reference_image.sum() == 10 * 16 * 12
    assert task.reference_masks[1].sum() == 10 * 16 * 12


def test_reads_memmap_and_h5py(tmp_path, tiny_cases):
    case = tiny_cases[0]
    np.save(tmp_path / "image.npy", case.image)
    np.save(tmp_path / "proposals.npy", case.proposals)
    with h5py.File(tmp_path / "case.h5", "w") as f:
        f["image"], f["proposals"] = case.image, case.proposals
    expected = TaskSampler([case], PLAIN).sample(0, 4, 1).to_dict()
    with h5py.File(tmp_path / "case.h5", "r") as f:
        sources = [NpyCase("c", tmp_path / "image.npy", tmp_path / "proposals.npy"), CaseArrays(f["image"], f["proposals"])]
        for source in sources:
            got = TaskSampler([source], PLAIN).sample(0, 4, 1).to_dict()
            for key in expected:
                np.testing.assert_array_equal(got[key], expected[key])


def test_read_crop_pads_outside():
    array = np.arange(2 * 4 * 4 * 4).reshape(2, 4, 4, 4)
    crop = read_crop(array, (-1, 2, 0), (3, 3, 4))
    assert crop.shape == (2, 3, 3, 4)
    np.testing.assert_array_equal(crop[:, 1:, :2], array[:, :2, 2:])
    assert crop[:, 0].sum() == 0 and crop[:, :, 2:].sum() == 0
    with pytest.raises(ValueError, match="outside"):
        read_crop(array, (5, 0, 0), (2, 2, 2))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"crop_size": (16, 16)}, "crop_size"),
        ({"num_masks": 1}, "num_masks"),
        ({"max_shift": 1.0}, "max_shift"),
        ({"min_mask_voxels": 0}, "min_mask_voxels"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplerConfig(**kwargs)


def test_config_from_plain_values():
    config = SamplerConfig.from_dict({"crop_size": [16, 16, 32], "query_spatial": {"rotation_deg": 10}})
    assert config.crop_size == (16, 16, 32) and config.query_spatial.rotation_deg == 10
    with pytest.raises(ValueError, match="unknown"):
        SamplerConfig.from_dict({"crops": 3})


def test_far_queries_are_placed_anywhere_with_exact_targets():
    # A volume much larger than the crop, so that a query placed anywhere often misses the reference's structures.
    cases = [synthetic_case(seed, (48, 48, 48), n_objects=12, case_id=f"c{seed}") for seed in range(2)]
    near, far = TaskSampler(cases, PLAIN), TaskSampler(cases, SamplerConfig(**{**PLAIN.__dict__, "far_query": 1.0}))
    outside, present = {"near": 0, "far": 0}, {"near": [], "far": []}
    for index in range(60):
        for name, sampler in (("near", near), ("far", far)):
            task = sampler.sample(0, 1, index)
            case = cases[task.case_index]
            assert np.all(task.query_start >= 0) and np.all(task.query_start + 16 <= 48)
            outside[name] += not np.all((task.query_start <= task.anchor) & (task.anchor < task.query_start + 16))
            for k in np.flatnonzero(task.valid[1:]) + 1:
                scale, label = task.mask_ids[k]
                # Targets are the same proposal in the query crop, wherever it lies.
                np.testing.assert_array_equal(task.query_masks[k], case.proposals[scale][_box(task.query_start)] == label)
                present[name].append(task.query_masks[k].any())
    assert outside["near"] == 0 and outside["far"] > 10
    # Far queries miss the reference's structures more often: tasks whose answer is "not here".
    assert np.mean(present["far"]) < np.mean(present["near"]) - 0.1


def test_store_cases_draw_the_tasks_of_their_label_maps(tmp_path):
    # The store is read by runs, arrays by dense crops: the same tasks, also where a
    # crop leaves the volume (X is shorter than the crop) and for far queries.
    cases = [synthetic_case(seed, (12, 30, 26), n_objects=6, case_id=f"c{seed}") for seed in range(2)]
    stores = []
    for case in cases:
        write_store(tmp_path / case.case_id, ProposalSet.from_label_maps(case.case_id, (1, 1, 1), case.proposals, ["a", "b"], [1.0, 2.0]))
        stores.append(CaseArrays(case.image, ProposalStore(tmp_path / case.case_id), case.case_id))
    config = SamplerConfig(crop_size=16, num_masks=5, min_mask_voxels=8, far_query=0.5)
    from_arrays, from_stores = TaskSampler(cases, config), TaskSampler(stores, config)
    padded = 0
    for index in range(40):
        expected, got = from_arrays.sample(0, 3, index), from_stores.sample(0, 3, index)
        for key, value in expected.to_dict().items():
            np.testing.assert_array_equal(getattr(got, key), value)
        padded += bool(got.valid[1:].any() and (got.reference_start < 0).any())
    assert padded > 5
