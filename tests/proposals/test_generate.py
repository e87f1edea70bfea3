from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mass_core.errors import CaseError
from mass_core.proposals.generate import ProposalParams, body_mask, deduplicate, generate_proposals

SPACING = (1.5, 1.5, 1.5)


def body_with_organs(shape=(32, 30, 28), seed=0) -> np.ndarray:
    """Air around an ellipsoidal body holding two brighter 'organs', with mild noise."""
    grid = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1) / 2
    r = (((grid - centre[:, None, None, None]) / (np.array(shape)[:, None, None, None] * 0.42)) ** 2).sum(0)
    image = np.where(r < 1, 0.0, -3.0)
    image[8:16, 8:18, 8:20] = 1.5
    image[18:25, 12:20, 6:14] = -1.0
    return (image + np.random.default_rng(seed).normal(scale=0.05, size=shape)).astype(np.float32)


@pytest.mark.parametrize("generator", ["fh3d", "slicewise"])
def test_generates_organ_proposals(generator):
    image = body_with_organs()
    # Little smoothing: the toy's sharp steps need none, and a blurred ramp
    # around an 8-voxel organ would become a segment of its own.
    params = ProposalParams(
        generator=generator, scales_mm3=(20.0, 200.0), sigma_mm=0.5, min_volume_mm3=50.0, max_volume_mm3=1e5
    )
    proposals = generate_proposals(image, SPACING, params, "case")
    maps = proposals.label_maps
    assert maps.shape == (2,) + image.shape and maps.dtype.kind == "u"
    organ = np.zeros(image.shape, bool)
    organ[8:16, 8:18, 8:20] = True
    dice = []
    for s in range(2):
        for label in range(1, int(maps[s].max()) + 1):
            m = maps[s] == label
            dice.append(2 * (m & organ).sum() / (m.sum() + organ.sum()))
    assert max(dice) > 0.9
    assert (maps[:, image < -2] == 0).all()  # air is never a proposal
    volumes = proposals.table["volume_mm3"]
    assert volumes.min() >= 50.0 and volumes.max() <= 1e5


def test_proposals_do_not_depend_on_the_air_around_the_body():
    # Graph, counts, dedup and renumbering run over the body's bounding box:
    # more air around it must give the same proposals and ids, only shifted.
    image = body_with_organs()
    params = ProposalParams(
        scales_mm3=(0.5, 5.0, 50.0), sigma_mm=0.5, min_volume_mm3=30.0, max_volume_mm3=1e5,
        foreground_threshold=-1.5,
    )
    pad = ((5, 2), (0, 7), (3, 3))
    padded = np.pad(image, pad, constant_values=-3.0)
    plain = generate_proposals(image, SPACING, params, "case")
    shifted = generate_proposals(padded, SPACING, params, "case")
    inner = (slice(None),) + tuple(slice(lo, lo + n) for (lo, _), n in zip(pad, image.shape))
    np.testing.assert_array_equal(shifted.label_maps[inner], plain.label_maps)
    assert shifted.label_maps.astype(bool).sum() == plain.label_maps.astype(bool).sum()  # nothing in the added air
    table = shifted.table.copy()
    for axis, (lo, _) in zip("xyz", pad):
        table[[f"{axis}0", f"{axis}1"]] -= lo
    assert len(plain.table) > 50
    pd.testing.assert_frame_equal(table, plain.table)


def test_near_duplicates_across_scales_are_dropped_largest_first():
    maps = np.zeros((2, 10, 10, 10), np.int32)
    maps[0, :5] = 1
    maps[0, 5:] = 2
    maps[1, :5] = 1
    maps[1, 4, 0, 0] = 2  # scale 1 label 1 is scale 0 label 1 minus one voxel
    maps[1, 5:] = 3
    voxels = [np.bincount(m.ravel()) for m in maps]
    keep = deduplicate(maps, voxels, iou=0.95)
    np.testing.assert_array_equal(keep[0], [False, True, True])
    np.testing.assert_array_equal(keep[1], [False, False, True, False])
    keep_exact = deduplicate(maps, voxels, iou=1.0)
    np.testing.assert_array_equal(keep_exact[1], [False, True, True, False])


def test_body_mask_fills_holes_within_axial_slices():
    image = np.full((20, 20, 6), -3.0, np.float32)
    image[3:17, 3:17] = 0.0
    image[7:12, 7:12] = -3.0  # a 'lung': enclosed in every axial slice
    image[0:2, 0:2] = 0.0  # a speck outside the body
    mask = body_mask(image)
    assert mask[7:12, 7:12].all() and mask[3:17, 3:17].all()
    assert not mask[0:2, 0:2].any()


@pytest.mark.parametrize(
    "image, params, match",
    [
        (np.full((24, 24, 24), 0.3, np.float32), ProposalParams(), "constant"),
        (np.pad(np.ones((2, 2, 2), np.float32), 11), ProposalParams(), "all background"),
        (body_with_organs(), ProposalParams(min_shape=(64, 64, 64)), "smaller than the crop"),
        (body_with_organs(), ProposalParams(min_volume_mm3=1e6, max_volume_mm3=2e6), "no proposals"),
    ],
)
def test_bad_input_raises_case_error_naming_the_case(image, params, match):
    with pytest.raises(CaseError, match=match) as err:
        generate_proposals(image, SPACING, params, "case_007")
    assert err.value.case_id == "case_007" and "case_007" in str(err.value)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"generator": "slic"}, "generator"),
        ({"scales_mm3": ()}, "scales_mm3"),
        ({"connectivity": 8}, "connectivity"),
        ({"hierarchical": True, "generator": "slicewise"}, "hierarchical"),
        ({"hierarchical": True, "scales_mm3": (4.0, 1.0)}, "scales_mm3"),
        ({"link": "chain"}, "link"),
        ({"min_volume_mm3": 10.0, "max_volume_mm3": 5.0}, "max_volume_mm3"),
        ({"dedup_iou": 0.0}, "dedup_iou"),
        ({"min_shape": (1, 2)}, "min_shape"),
        ({"sigma_mm": -1.0}, "sigma_mm"),
    ],
)
def test_params_reject_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ProposalParams(**kwargs)


def test_params_from_config_ignores_stage_keys_and_round_trips():
    section = {"generator": "fh3d", "scales_mm3": [1, 2], "min_shape": [8, 8, 8], "on_error": "skip", "recall": {}}
    params = ProposalParams.from_config(section)
    assert params.scales_mm3 == (1, 2) and params.min_shape == (8, 8, 8)
    assert ProposalParams.from_config(params.to_dict()) == params
