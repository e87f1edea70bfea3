"""Tests of the phantom generator: determinism, anatomy, intensities and the written dataset.

Most properties are checked on a coarse grid over the default field of view
(48 x 48 x 32 voxels of 2.5 x 2.5 x 4 mm, 8x fewer voxels than the default):
the anatomy is defined in physical units, so volumes and positions match the
default grid while the whole cohort of 24 cases takes about a second.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from mass_core.phantom import (
    LABELS,
    PhantomCase,
    PhantomParams,
    case_ids,
    main,
    make_phantom,
    write_case,
    write_dataset,
)

COARSE = PhantomParams(shape=(48, 48, 32), spacing_mm=(2.5, 2.5, 4.0))
N_COHORT = 24
ORGANS = {name: cid for cid, name in LABELS.items() if name not in ("background", "lesion")}

# Volumes (mL) for the default 120 x 120 x 128 mm field of view. The trunk is
# an adult one scaled by ~0.3 (volumes by ~0.03): an adult liver of 1-2.5 L
# becomes ~30-75 mL, a spleen of 0.1-0.4 L ~3-12 mL, a kidney of 0.12-0.2 L
# ~4-6 mL. The bounds leave room for the generator's shape variation.
VOLUME_ML = {
    "liver": (15.0, 110.0),
    "spleen": (1.5, 16.0),
    "left_kidney": (1.5, 10.0),
    "right_kidney": (1.5, 10.0),
    "aorta": (4.0, 16.0),
    "spine": (12.0, 40.0),
}
# Mean HU per labeled structure (with partial volume at the borders).
MEAN_HU = {
    "liver": (35.0, 90.0),
    "spleen": (25.0, 75.0),
    "left_kidney": (10.0, 70.0),
    "right_kidney": (10.0, 70.0),
    "aorta": (110.0, 260.0),
    "spine": (300.0, 800.0),
}


@pytest.fixture(scope="module")
def cohort() -> list[PhantomCase]:
    return [make_phantom(i, COARSE) for i in range(N_COHORT)]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("phantom")
    return root, write_dataset(root, 3, COARSE)


def _volume_ml(case: PhantomCase, class_id: int) -> float:
    return float((case.label == class_id).sum() * np.prod(case.spacing_mm) / 1000.0)


def _best_threshold_accuracy(a: np.ndarray, b: np.ndarray) -> float:
    """Best balanced accuracy of any rule ``value > t`` (either way round) separating ``a`` from ``b``."""
    values = np.concatenate([a, b]).astype(float)
    weights = np.concatenate([np.full(a.size, 0.5 / a.size), np.full(b.size, -0.5 / b.size)])
    order = np.argsort(values, kind="stable")
    # Accuracy of "a if value > t" with t just above each sorted value.
    accuracy = 0.5 - np.cumsum(weights[order])
    return float(max(accuracy.max(), (1.0 - accuracy).max()))


# ----------------------------------------------------------------------------- API and validation


def test_case_ids() -> None:
    assert case_ids(3) == ["phantom_000", "phantom_001", "phantom_002"]
    assert case_ids(1000)[-1] == "phantom_999"


@pytest.mark.parametrize("n_cases", [0, -1, 1001, 2.0, True])
def test_case_ids_rejects_bad_counts(n_cases: object) -> None:
    with pytest.raises(ValueError, match="n_cases"):
        case_ids(n_cases)  # type: ignore[arg-type]


def test_labels_are_the_fixed_class_ids() -> None:
    assert LABELS == {0: "background", 1: "liver", 2: "spleen", 3: "left_kidney", 4: "right_kidney",
                      5: "aorta", 6: "spine", 7: "lesion"}


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"shape": (96, 96)}, "shape"),
        ({"shape": (96, 96, 8)}, "shape"),
        ({"shape": (96.0, 96, 64)}, "shape"),
        ({"spacing_mm": (1.0, 0.0, 1.0)}, "spacing_mm"),
        ({"spacing_mm": (1.0, float("nan"), 1.0)}, "spacing_mm"),
        ({"lesion_probability": 1.5}, "lesion_probability"),
        ({"lesion_probability": -0.1}, "lesion_probability"),
        ({"noise_hu": -1.0}, "noise_hu"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_params_reject_bad_arguments(kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        PhantomParams(**kwargs)


def test_params_normalise_sequences() -> None:
    params = PhantomParams(shape=[48, 48, 32], spacing_mm=[2.5, 2.5, 4], lesion_probability=1, seed=np.int64(3))
    assert params == PhantomParams(shape=(48, 48, 32), spacing_mm=(2.5, 2.5, 4.0), lesion_probability=1.0, seed=3)
    assert isinstance(params.spacing_mm[2], float) and isinstance(params.seed, int)


@pytest.mark.parametrize("index", [-1, 1000, 1.0])
def test_make_phantom_rejects_bad_index(index: object) -> None:
    with pytest.raises(ValueError, match="index"):
        make_phantom(index, COARSE)  # type: ignore[arg-type]


def test_default_case_types_and_geometry() -> None:
    params = PhantomParams()
    case = make_phantom(0, params)
    assert case.image_hu.shape == case.label.shape == (96, 96, 64)
    assert case.image_hu.dtype == np.int16 and case.label.dtype == np.uint8
    assert case.spacing_mm == (1.25, 1.25, 2.0)
    # The field of view is centred on the physical origin.
    centre = np.asarray(case.origin_mm) + (np.asarray(params.shape) - 1) / 2 * np.asarray(params.spacing_mm)
    np.testing.assert_allclose(centre, 0.0, atol=1e-9)
    assert set(np.unique(case.label)) <= set(LABELS)


# ----------------------------------------------------------------------------- determinism


def test_same_inputs_give_identical_bytes() -> None:
    a, b = make_phantom(4, PhantomParams()), make_phantom(4, PhantomParams())
    assert a.image_hu.tobytes() == b.image_hu.tobytes()
    assert a.label.tobytes() == b.label.tobytes()


def test_case_does_not_depend_on_generation_order(cohort: list[PhantomCase]) -> None:
    alone = make_phantom(5, COARSE)
    reversed_batch = {i: make_phantom(i, COARSE) for i in (7, 6, 5)}
    for other in (cohort[5], reversed_batch[5]):
        assert other.image_hu.tobytes() == alone.image_hu.tobytes()
        assert other.label.tobytes() == alone.label.tobytes()


def test_seed_changes_the_case() -> None:
    a = make_phantom(0, COARSE)
    b = make_phantom(0, dataclasses.replace(COARSE, seed=COARSE.seed + 1))
    assert not np.array_equal(a.label, b.label)


@pytest.mark.parametrize(("probability", "class_label"), [(0.0, 0), (1.0, 1)])
def test_lesion_probability_extremes(probability: float, class_label: int) -> None:
    params = dataclasses.replace(COARSE, lesion_probability=probability)
    assert [make_phantom(i, params).class_label for i in range(4)] == [class_label] * 4


def test_same_case_on_coarser_grid_has_same_anatomy() -> None:
    """Shapes are defined in mm: the default and the coarse grid give matching organ volumes."""
    fine, coarse = make_phantom(1, PhantomParams()), make_phantom(1, COARSE)
    for class_id in ORGANS.values():
        assert _volume_ml(coarse, class_id) == pytest.approx(_volume_ml(fine, class_id), rel=0.15)


# ----------------------------------------------------------------------------- anatomy


def test_every_organ_in_every_case_with_plausible_volume(cohort: list[PhantomCase]) -> None:
    for case in cohort:
        for name, class_id in ORGANS.items():
            low, high = VOLUME_ML[name]
            assert low <= _volume_ml(case, class_id) <= high, (case.index, name, _volume_ml(case, class_id))


def test_organs_are_single_connected_structures(cohort: list[PhantomCase]) -> None:
    for case in cohort[:8]:
        for name in ("liver", "spleen", "left_kidney", "right_kidney", "aorta"):
            mask = case.label == ORGANS[name]
            labelled, n = ndimage.label(mask)
            largest = np.bincount(labelled.ravel())[1:].max()
            assert largest >= 0.9 * mask.sum(), (case.index, name, n)


def test_cases_differ_in_size_and_position(cohort: list[PhantomCase]) -> None:
    for name in ("liver", "spleen", "left_kidney", "right_kidney"):
        volumes = np.array([_volume_ml(case, ORGANS[name]) for case in cohort])
        assert volumes.std() > 0.05 * volumes.mean(), name
        centroids = np.array([ndimage.center_of_mass(case.label == ORGANS[name]) for case in cohort])
        spread_mm = centroids.std(axis=0) * np.asarray(COARSE.spacing_mm)
        assert (spread_mm > 1.0).all(), (name, spread_mm)
    assert len({case.label.tobytes() for case in cohort}) == N_COHORT


def test_lesions_exactly_in_lesion_cases_about_half(cohort: list[PhantomCase]) -> None:
    for case in cohort:
        has_lesion = bool((case.label == 7).any())
        assert case.class_label == int(has_lesion) == int(case.n_lesions > 0)
        if has_lesion:
            # 1-3 blobs 5-12 mm across: at least one voxel, at most a few mL in all.
            assert 0.02 <= _volume_ml(case, 7) <= 6.0
    n_positive = sum(case.class_label for case in cohort)
    assert 7 <= n_positive <= 17  # binomial(24, 0.5): 99.3% of seeds fall here


def test_lesions_replace_liver_or_kidney_only(cohort: list[PhantomCase]) -> None:
    """Lesions draw from their own stream: without them the anatomy is the same, and they sit in a host organ."""
    no_lesions = dataclasses.replace(COARSE, lesion_probability=0.0)
    for case in (c for c in cohort if c.class_label):
        without = make_phantom(case.index, no_lesions)
        lesion = case.label == 7
        assert without.class_label == 0
        assert np.isin(without.label[lesion], [1, 3, 4]).all(), case.index
        np.testing.assert_array_equal(without.label[~lesion], case.label[~lesion])


def test_organs_lie_inside_the_body(cohort: list[PhantomCase]) -> None:
    for case in cohort:
        # Body: everything denser than -400 HU, with enclosed lung and gas filled in, per axial slice.
        dense = case.image_hu > -400
        body = np.stack([ndimage.binary_fill_holes(dense[:, :, k]) for k in range(dense.shape[2])], axis=-1)
        inner = ndimage.binary_erosion(body, structure=np.ones((3, 3, 1), bool))  # one voxel (2.5 mm) in
        assert not ((case.label > 0) & ~inner).any(), case.index
        # Air around the body.
        assert case.image_hu[0, 0, :].mean() < -950


def test_anatomical_sides_in_array_axes(cohort: list[PhantomCase]) -> None:
    """Arrays follow the LPS image axes: i grows to the patient's left, j to posterior, k to superior."""
    for case in cohort:
        centre = {name: np.array(ndimage.center_of_mass(case.label == cid)) for name, cid in ORGANS.items()}
        assert centre["spleen"][0] > centre["liver"][0]
        assert centre["left_kidney"][0] > centre["right_kidney"][0]
        assert centre["aorta"][1] < centre["spine"][1]  # aorta in front of the spine
        assert centre["liver"][2] > centre["right_kidney"][2]  # liver above the right kidney


# ----------------------------------------------------------------------------- intensities


def test_mean_intensity_per_organ(cohort: list[PhantomCase]) -> None:
    for case in cohort:
        for name, class_id in ORGANS.items():
            low, high = MEAN_HU[name]
            mean = float(case.image_hu[case.label == class_id].mean())
            assert low <= mean <= high, (case.index, name, mean)


def test_soft_organs_are_not_separable_by_a_threshold(cohort: list[PhantomCase]) -> None:
    pooled: dict[str, list[np.ndarray]] = {"liver": [], "spleen": [], "kidney": []}
    for case in cohort:
        liver, spleen = case.image_hu[case.label == 1], case.image_hu[case.label == 2]
        assert _best_threshold_accuracy(liver, spleen) < 0.95, case.index
        pooled["liver"].append(liver)
        pooled["spleen"].append(spleen)
        pooled["kidney"].append(case.image_hu[(case.label == 3) | (case.label == 4)])
    liver, spleen, kidney = (np.concatenate(v) for v in pooled.values())
    assert _best_threshold_accuracy(liver, spleen) < 0.8
    assert _best_threshold_accuracy(spleen, kidney) < 0.9


def test_noise_level_is_as_configured() -> None:
    quiet = make_phantom(0, dataclasses.replace(COARSE, noise_hu=0.0))
    noisy = make_phantom(0, dataclasses.replace(COARSE, noise_hu=25.0))
    difference = noisy.image_hu.astype(float) - quiet.image_hu
    centre = difference[12:36, 12:36, 8:24]  # away from the -1024 clip in air
    assert 20.0 < centre.std() < 30.0
    np.testing.assert_array_equal(quiet.label, noisy.label)


# ----------------------------------------------------------------------------- files


def test_dataset_layout_and_tables(written: tuple[Path, list[str]]) -> None:
    root, ids = written
    assert ids == case_ids(3)
    assert sorted(p.name for p in (root / "images").iterdir()) == [f"{i}.nii.gz" for i in ids]
    assert sorted(p.name for p in (root / "labels").iterdir()) == [f"{i}.nii.gz" for i in ids]
    assert not [p for p in root.rglob(".*")], "temporary files left behind"
    with open(root / "classes.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["case_id"] for r in rows] == ids
    for row in rows:
        label = np.asarray(nib.load(root / "labels" / f"{row['case_id']}.nii.gz").dataobj)
        assert int(row["class_label"]) == int((label == 7).any())
    info = json.loads((root / "dataset.json").read_text())
    assert info["modality"] == "CT" and info["n_cases"] == 3
    assert info["labels"] == {str(k): v for k, v in LABELS.items()}
    assert info["generator"]["params"]["spacing_mm"] == [2.5, 2.5, 4.0]


def test_written_files_match_the_case(written: tuple[Path, list[str]]) -> None:
    root, ids = written
    case = make_phantom(1, COARSE)
    image = sitk.ReadImage(str(root / "images" / f"{ids[1]}.nii.gz"))
    label = sitk.ReadImage(str(root / "labels" / f"{ids[1]}.nii.gz"))
    for img in (image, label):
        assert img.GetSize() == COARSE.shape
        np.testing.assert_allclose(img.GetSpacing(), COARSE.spacing_mm)
        np.testing.assert_allclose(img.GetOrigin(), case.origin_mm, atol=1e-4)
        np.testing.assert_allclose(img.GetDirection(), np.eye(3).ravel())  # LPS
    assert image.GetPixelID() == sitk.sitkInt16 and label.GetPixelID() == sitk.sitkUInt8
    # SimpleITK arrays are (z, y, x); the case's arrays are (x, y, z).
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image).transpose(2, 1, 0), case.image_hu)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label).transpose(2, 1, 0), case.label)


def test_left_right_in_physical_ras_coordinates(written: tuple[Path, list[str]]) -> None:
    """In nibabel's RAS+ world coordinates +x is the patient's Right, +y Anterior, +z Superior."""
    root, ids = written
    for case_id in ids:
        image = nib.load(root / "labels" / f"{case_id}.nii.gz")
        assert nib.aff2axcodes(image.affine) == ("L", "P", "S")  # written in LPS on purpose
        label = np.asarray(image.dataobj)

        def ras(class_id: int) -> np.ndarray:
            return nib.affines.apply_affine(image.affine, ndimage.center_of_mass(label == class_id))

        assert ras(1)[0] > 0 > ras(2)[0], "liver on the patient's right, spleen on the left"
        assert ras(4)[0] > ras(3)[0], "right kidney to the right of the left kidney"
        assert ras(5)[1] > ras(6)[1], "aorta anterior to the spine"
        assert ras(1)[2] > ras(4)[2], "liver superior to the right kidney"


def test_written_bytes_are_reproducible_and_independent_of_count(
    written: tuple[Path, list[str]], tmp_path: Path
) -> None:
    root, ids = written
    write_dataset(tmp_path, 2, COARSE)
    for case_id in ids[:2]:
        for folder in ("images", "labels"):
            name = f"{folder}/{case_id}.nii.gz"
            assert (tmp_path / name).read_bytes() == (root / name).read_bytes(), name


def test_write_case_rejects_path_like_ids(tmp_path: Path) -> None:
    case = make_phantom(0, COARSE)
    for bad in ("", "../escape", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="case_id"):
            write_case(case, tmp_path, bad)


# ----------------------------------------------------------------------------- command line


def test_main_writes_a_dataset(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    code = main(["--out", str(out), "--n-cases", "2", "--seed", "3", "--shape", "48", "48", "32",
                 "--spacing", "2.5", "2.5", "4.0"])
    assert code == 0
    info = json.loads((out / "dataset.json").read_text())
    assert info["n_cases"] == 2 and info["generator"]["params"]["seed"] == 3
    label = np.asarray(nib.load(out / "labels" / "phantom_001.nii.gz").dataobj)
    params = PhantomParams(shape=(48, 48, 32), spacing_mm=(2.5, 2.5, 4.0), seed=3)
    np.testing.assert_array_equal(label, make_phantom(1, params).label)


@pytest.mark.parametrize(
    "argv",
    [["--n-cases", "0"], ["--shape", "8", "48", "32"], ["--spacing", "0", "1", "1"]],
)
def test_main_rejects_bad_arguments(tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "ds"), *argv])
    assert exit_info.value.code == 2
    assert not (tmp_path / "ds").exists()


def test_module_runs_as_a_script(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "mass_core.phantom", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--n-cases" in result.stdout
