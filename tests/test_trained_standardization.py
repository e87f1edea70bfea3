from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from mass_core.datasets import CaseSource
from mass_core.manifest import SplitParams, build_manifest
from mass_core.phantom import PhantomParams, make_phantom, write_case
from mass_core.standardize import StandardizeParams, standardize_case
from mass_core.trained_standardization import resolve_standardization, resolve_window, training_standardization

A = StandardizeParams(spacing_mm=(6.0, 6.0, 6.0))
B = StandardizeParams(spacing_mm=(5.0, 5.0, 8.0), ct_clip_hu=(-1000.0, 400.0))


def record(params: StandardizeParams, modality: str = "CT", cases: int = 1) -> dict:
    # Lists, as a record reads back from a checkpoint.
    return {"modality": modality, "params": json.loads(json.dumps(dataclasses.asdict(params))), "cases": cases}


def _dataset(root, params: StandardizeParams, indices: list[int], splits: list[str]):
    """Phantom cases standardized with ``params`` and their manifest, splits fixed by a case table."""
    phantom = PhantomParams(shape=(32, 32, 20), spacing_mm=(3.0, 3.0, 5.0), noise_hu=5.0)
    metas = []
    for i in indices:
        write_case(make_phantom(i, phantom), root / "raw", f"p{i}")
        source = CaseSource(f"p{i}", root / "raw" / "images" / f"p{i}.nii.gz", None, "CT")
        standardize_case(source, root / "std" / f"p{i}", params)
        metas.append(root / "std" / f"p{i}" / "meta.json")
    pd.DataFrame({"case_id": [f"p{i}" for i in indices], "split": splits}).to_csv(root / "cases.csv", index=False)
    build_manifest(metas, root / "manifest.parquet", root / "skipped.csv", SplitParams(), root / "cases.csv")
    return root / "manifest.parquet"


def test_training_cases_give_one_record_per_distinct_standardization(tmp_path):
    first = _dataset(tmp_path / "a", A, [0, 1, 2], ["train", "train", "test"])
    second = _dataset(tmp_path / "b", B, [3], ["train"])
    assert training_standardization([second, first]) == [record(A, cases=2), record(B)]
    assert training_standardization([first], split=None) == [record(A, cases=3)]
    # What inference then resolves: the training settings, field for field.
    assert resolve_standardization(training_standardization([first]), None, {}, "c").params == A


def test_a_single_record_decides_every_setting():
    resolved = resolve_standardization([record(B)], None, {}, "c")
    assert resolved.modality == "CT" and resolved.params == B
    assert set(resolved.sources.values()) == {"checkpoint"}
    assert resolved.describe().startswith("modality CT (checkpoint); spacing_mm 5 5 8 (checkpoint); ct_clip_hu -1000 400 (checkpoint)")
    overridden = resolve_standardization([record(B)], "CT", {"spacing_mm": (2.0, 2.0, 2.0)}, "c")
    assert overridden.params == dataclasses.replace(B, spacing_mm=(2.0, 2.0, 2.0))
    assert overridden.sources["spacing_mm"] == overridden.sources["modality"] == "command line"


def test_a_checkpoint_without_records_needs_the_spacing_and_defaults_the_rest():
    with pytest.raises(ValueError, match=r"^checkpoint c records no standardization .*pass --spacing X Y Z"):
        resolve_standardization([], None, {}, "checkpoint c")
    resolved = resolve_standardization([], None, {"spacing_mm": (2.5, 2.5, 2.5)}, "checkpoint c")
    assert resolved.modality == "CT" and resolved.params == StandardizeParams(spacing_mm=(2.5, 2.5, 2.5))
    assert resolved.sources["ct_clip_hu"] == resolved.sources["modality"] == "default"


def test_records_that_disagree_must_be_chosen_between():
    mixed = [record(A, cases=5), record(dataclasses.replace(B, margin_mm=20.0, roi="label_box"), cases=2)]
    with pytest.raises(ValueError, match=r"standardized in several ways \(spacing_mm: \[5.0, 5.0, 8.0\] or \[6.0, 6.0, 6.0\]; "
                                         r"ct_clip_hu: .*; margin_mm: 10.0 or 20.0\); choose with --spacing X Y Z, --ct-window LO HI, --margin MM"):
        resolve_standardization(mixed, None, {}, "c")
    chosen = resolve_standardization(mixed, None, {"spacing_mm": (6.0, 6.0, 6.0), "ct_clip_hu": (-991.0, 500.0), "margin_mm": 10.0}, "c")
    # roi has no option: the majority's (A, 5 cases) is taken and the log says so.
    assert chosen.params == A and chosen.sources["roi"] == "checkpoint, most cases"


def test_a_checkpoint_of_several_modalities_needs_the_modality():
    records = [record(A, "CT", 4), record(B, "MR", 2)]
    with pytest.raises(ValueError, match="was trained on CT, MR scans; say which these are with --modality"):
        resolve_standardization(records, None, {}, "c")
    assert resolve_standardization(records, "MR", {}, "c").params == B
    with pytest.raises(ValueError, match="records no standardization of PET scans; pass --spacing X Y Z"):
        resolve_standardization(records, "PET", {}, "c")


def test_window_defaults_to_the_training_crop_and_options_replace_it_one_by_one():
    trained = resolve_window([16, 16, 24], {}, "c")
    assert (trained.crop, trained.roi) == ((16, 16, 24), (16, 16, 24))
    assert trained.describe() == "reference_crop 16 16 24 (checkpoint); sliding_window 16 16 24 (checkpoint)"
    roi = resolve_window([16, 16, 24], {"sliding_window": (32, 32, 32)}, "c")
    assert (roi.crop, roi.roi) == ((16, 16, 24), (32, 32, 32))
    assert roi.describe() == "reference_crop 16 16 24 (checkpoint); sliding_window 32 32 32 (command line)"
    with pytest.raises(ValueError, match="unknown window settings"):
        resolve_window([16, 16, 16], {"overlap": 0.5}, "c")


def test_window_of_a_checkpoint_without_a_crop_needs_both_options():
    with pytest.raises(ValueError, match=r"^checkpoint c records no training crop .*pass --crop X Y Z and --roi X Y Z with "):
        resolve_window([], {}, "checkpoint c")
    with pytest.raises(ValueError, match=r"pass --roi X Y Z with"):
        resolve_window([], {"reference_crop": (8, 8, 8)}, "checkpoint c")
    given = resolve_window([], {"reference_crop": (8, 8, 8), "sliding_window": (16, 16, 16)}, "checkpoint c")
    assert (given.crop, given.roi) == ((8, 8, 8), (16, 16, 16))
    assert given.sources == {"reference_crop": "command line", "sliding_window": "command line"}
