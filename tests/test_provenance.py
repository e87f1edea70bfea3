"""Provenance sidecars: hashes, git state, DVC pointers, stable bytes."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest

from mass_core.provenance import config_sha256, dvc_pointer, file_md5, git_state, provenance_path, write_provenance


def test_sidecar_sits_beside_its_output():
    assert str(provenance_path("results/x/manifest.parquet")) == "results/x/manifest.parquet.provenance.json"


@pytest.mark.parametrize("size", [0, 5, (1 << 20) + 3])
def test_file_md5_matches_hashlib_across_chunks(tmp_path, size):
    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * (size // 256) + bytes(size % 256))
    assert file_md5(path, chunk_bytes=1 << 16) == hashlib.md5(path.read_bytes()).hexdigest()


def test_config_hash_ignores_key_order_but_not_values():
    a = {"splits": {"seed": 0, "val_fraction": 0.1}, "results": "results"}
    b = {"results": "results", "splits": {"val_fraction": 0.1, "seed": 0}}
    assert config_sha256(a) == config_sha256(b)
    assert config_sha256(a) != config_sha256(a | {"results": "elsewhere"})


def test_dvc_pointer_covers_files_inside_a_tracked_folder(tmp_path):
    data = tmp_path / "resources" / "phantom"
    (data / "images").mkdir(parents=True)
    (data / "images" / "a.nii.gz").write_bytes(b"x")
    (tmp_path / "resources" / "phantom.dvc").write_text("outs:\n- md5: abc123.dir\n  path: phantom\n")
    assert dvc_pointer(data / "images" / "a.nii.gz")["md5"] == "abc123.dir"
    assert dvc_pointer(data)["md5"] == "abc123.dir"
    assert dvc_pointer(tmp_path / "resources") is None


def test_git_state_outside_git_is_unknown(tmp_path):
    assert git_state(tmp_path) == {"commit": None, "dirty": None}


def test_git_state_reports_commit_and_uncommitted_changes(tmp_path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "code.py").write_text("a = 1\n")
    subprocess.run([*git, "add", "code.py"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert git_state(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "code.py").write_text("a = 2\n")
    assert git_state(tmp_path) == {"commit": head, "dirty": True}


def test_write_provenance_records_inputs_and_rewrites_identically(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "raw").mkdir()
    (tmp_path / "meta.json").write_text("{}")
    (tmp_path / "table.parquet").write_bytes(b"table")
    config = {"results": "results"}
    sidecar = write_provenance("table.parquet", ["meta.json", "raw"], config)
    record = json.loads(sidecar.read_text())
    assert record["output_md5"] == hashlib.md5(b"table").hexdigest()
    assert record["config_sha256"] == config_sha256(config) and record["config"] == config
    assert record["inputs"] == [
        {"path": "meta.json", "md5": hashlib.md5(b"{}").hexdigest(), "dvc": None},
        {"path": "raw", "md5": None, "dvc": None},
    ]
    first = sidecar.read_bytes()
    assert write_provenance("table.parquet", ["meta.json", "raw"], config).read_bytes() == first


def test_write_provenance_rejects_a_missing_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "table.parquet").write_bytes(b"table")
    with pytest.raises(FileNotFoundError, match="gone.json"):
        write_provenance("table.parquet", ["gone.json"], {})
