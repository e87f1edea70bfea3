from __future__ import annotations

import subprocess
import sys

import pandas as pd


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mass_core", *args], capture_output=True, text=True)


def test_stages_run_without_snakemake(tmp_path):
    assert _cli("phantom", "--out", str(tmp_path / "raw"), "--n-cases", "3", "--shape", "40", "40", "24").returncode == 0
    for cid in ("phantom_000", "phantom_001", "phantom_002"):
        result = _cli("standardize", "--image", str(tmp_path / f"raw/images/{cid}.nii.gz"), "--label", str(tmp_path / f"raw/labels/{cid}.nii.gz"),
                      "--case-id", cid, "--out", str(tmp_path / "std" / cid), "--spacing", "3", "3", "3")
        assert result.returncode == 0 and f"{cid}: ok" in result.stdout
    metas = [str(tmp_path / "std" / cid / "meta.json") for cid in ("phantom_000", "phantom_001", "phantom_002")]
    assert _cli("manifest", *metas, "--out-dir", str(tmp_path), "--case-table", str(tmp_path / "raw/classes.csv")).returncode == 0
    manifest = pd.read_parquet(tmp_path / "manifest.parquet")
    classes = pd.read_csv(tmp_path / "raw/classes.csv")
    assert list(manifest["class_label"]) == list(classes["class_label"])


def test_bad_case_fails_with_one_line_message(tmp_path):
    result = _cli("standardize", "--image", str(tmp_path / "missing.nii.gz"), "--case-id", "ghost", "--out", str(tmp_path / "o"))
    assert result.returncode == 1
    assert result.stderr.strip() == f"standardize failed: case 'ghost': file not found: {tmp_path / 'missing.nii.gz'}"
