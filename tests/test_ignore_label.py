"""A dataset's ignore label (often 255) is no class: declared, it is kept apart; undeclared, the case is refused."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from mass_core.datasets import CaseSource, list_cases
from mass_core.labels import IGNORE_LABEL
from mass_core.manifest import SplitParams, build_manifest
from mass_core.standardize import StandardizeParams, run_standardize, standardize_case

from volumes import make_image

# Axis-aligned and already at the target spacing: nearest-neighbour resampling
# moves no voxel, so standardized counts equal the raw ones.
SPACING = (1.5, 1.5, 1.5)


@pytest.fixture
def labeled_255(tmp_path):
    """A CT body with class 1 (27 voxels), class 2 (8) and 255 (2 * 3 * 4 = 24 voxels), all inside the body."""
    hu = np.full((20, 20, 16), -1000, np.int16)
    hu[3:17, 3:17, 3:13] = 40 + 10 * np.arange(3, 17, dtype=np.int16)[:, None, None]
    label = np.zeros(hu.shape, np.uint8)
    label[5:8, 5:8, 5:8] = 1
    label[10:12, 10:12, 5:7] = 2
    label[12:14, 5:8, 8:12] = 255
    sitk.WriteImage(make_image(hu, SPACING), str(tmp_path / "img.nii.gz"))
    sitk.WriteImage(make_image(label, SPACING), str(tmp_path / "lab.nii.gz"))
    return tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz"


REASON = ("label value 255 (24 voxels) looks like an ignore label, not a class; set `ignore_label: 255` for this dataset "
          "(mass-core standardize: --ignore-label 255) to leave those voxels out of training and scoring")


def test_undeclared_255_fails_the_run_naming_the_setting(labeled_255, tmp_path):
    image, label = labeled_255
    with pytest.raises(SystemExit) as failure:
        run_standardize(CaseSource("c1", image, label, "CT"), tmp_path / "out", StandardizeParams(spacing_mm=SPACING), on_error="fail")
    assert str(failure.value) == f"standardize failed: case 'c1': {REASON}"


def test_undeclared_255_is_skipped_and_listed(labeled_255, tmp_path):
    image, label = labeled_255
    meta = run_standardize(CaseSource("c1", image, label, "CT"), tmp_path / "c1", StandardizeParams(spacing_mm=SPACING), on_error="skip")
    assert meta["status"] == "skipped" and meta["reason"] == REASON
    assert not (tmp_path / "c1" / "label.npy").exists()
    build_manifest([tmp_path / "c1" / "meta.json"], tmp_path / "manifest.parquet", tmp_path / "skipped.csv", SplitParams())
    skipped = pd.read_csv(tmp_path / "skipped.csv")
    assert skipped.to_dict("records") == [{"case_id": "c1", "stage": "standardize", "reason": REASON}]


def test_declared_ignore_label_is_no_class_and_is_counted(labeled_255, tmp_path):
    image, label = labeled_255
    out = tmp_path / "c1"
    meta = standardize_case(CaseSource("c1", image, label, "CT", ignore_label=255), out, StandardizeParams(spacing_mm=SPACING))
    stored = np.load(out / "label.npy")
    assert meta["label_classes"] == [1, 2]
    assert meta["ignore_label"] == 255 and meta["ignored_voxels"] == 24
    assert json.loads((out / "meta.json").read_text())["ignored_voxels"] == 24
    assert stored.dtype == np.uint16
    assert np.count_nonzero(stored == IGNORE_LABEL) == 24 and np.count_nonzero(stored == 255) == 0
    assert (np.count_nonzero(stored == 1), np.count_nonzero(stored == 2)) == (27, 8)
    build_manifest([out / "meta.json"], tmp_path / "manifest.parquet", tmp_path / "skipped.csv", SplitParams())
    row = pd.read_parquet(tmp_path / "manifest.parquet").iloc[0]
    assert list(row["label_classes"]) == [1, 2] and row["ignored_voxels"] == 24


def test_another_declared_value_does_not_excuse_255(labeled_255, tmp_path):
    image, label = labeled_255
    meta = run_standardize(CaseSource("c1", image, label, "CT", ignore_label=254), tmp_path / "c1",
                           StandardizeParams(spacing_mm=SPACING), on_error="skip")
    assert meta["status"] == "skipped" and meta["reason"] == REASON


def test_undeclared_65535_is_refused_too(tmp_path):
    hu = np.full((12, 12, 10), -1000, np.int16)
    hu[2:10, 2:10, 2:8] = 40 + 10 * np.arange(2, 10, dtype=np.int16)[:, None, None]
    label = np.zeros(hu.shape, np.uint16)
    label[4:6, 4:6, 4:6] = IGNORE_LABEL
    sitk.WriteImage(make_image(hu, SPACING), str(tmp_path / "img.nii.gz"))
    sitk.WriteImage(make_image(label, SPACING), str(tmp_path / "lab.nii.gz"))
    meta = run_standardize(CaseSource("c2", tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz", "CT"), tmp_path / "c2",
                           StandardizeParams(spacing_mm=SPACING), on_error="skip")
    assert meta["reason"].startswith("label value 65535 (8 voxels) looks like an ignore label, not a class; set `ignore_label: 65535`")


def test_dataset_spec_reaches_every_case(tmp_path):
    (tmp_path / "images").mkdir()
    sitk.WriteImage(make_image(np.zeros((4, 4, 4), np.int16)), str(tmp_path / "images" / "a.nii.gz"))
    spec = {"layout": "folder", "root": str(tmp_path), "modality": "CT"}
    assert list_cases(spec)[0].ignore_label is None
    assert list_cases(spec | {"ignore_label": 255})[0].ignore_label == 255
    with pytest.raises(ValueError, match="ignore_label must be a label value in 1..65535"):
        list_cases(spec | {"ignore_label": 0})


def test_cli_option(labeled_255, tmp_path):
    image, label = labeled_255
    command = [sys.executable, "-m", "mass_core", "standardize", "--image", str(image), "--label", str(label), "--case-id", "c1",
               "--spacing", *map(str, SPACING)]
    refused = subprocess.run([*command, "--out", str(tmp_path / "a")], capture_output=True, text=True)
    assert refused.returncode == 1 and refused.stderr.strip() == f"standardize failed: case 'c1': {REASON}"
    accepted = subprocess.run([*command, "--out", str(tmp_path / "b"), "--ignore-label", "255"], capture_output=True, text=True)
    assert accepted.returncode == 0, accepted.stderr
    assert json.loads((tmp_path / "b" / "meta.json").read_text())["label_classes"] == [1, 2]
