from __future__ import annotations

import os
import stat

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from mass_core.atomic import PARTIAL, atomic_path, commit_folder, remove_stale_temps, write_json, write_npy, write_text, write_with


def test_interrupted_write_leaves_no_file(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_temporary_name_keeps_compound_extension(tmp_path):
    image = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.int16))
    write_with(tmp_path / "case.nii.gz", lambda tmp: sitk.WriteImage(image, str(tmp)))
    assert sitk.ReadImage(str(tmp_path / "case.nii.gz")).GetSize() == (5, 4, 3)


def test_json_is_stable_and_npy_is_mmappable(tmp_path):
    write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "a.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    write_npy(tmp_path / "x.npy", np.arange(6, dtype=np.float32).reshape(2, 3).T)
    loaded = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert isinstance(loaded, np.memmap) and loaded[2, 1] == 5


@pytest.fixture
def umask_002():
    old = os.umask(0o002)
    yield 0o664
    os.umask(old)


def _writers():
    """One writer per library the stages save through, each given the temporary path."""
    import h5py
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    def h5(tmp):
        with h5py.File(tmp, "w") as f:
            f["x"] = np.arange(3)

    def png(tmp):
        fig = plt.figure(figsize=(1, 1))
        fig.savefig(tmp)
        plt.close(fig)

    return {
        "out.npy": lambda tmp: np.save(tmp, np.arange(3)),
        "out.parquet": lambda tmp: pd.DataFrame({"a": [1]}).to_parquet(tmp),
        "out.h5": h5,
        "out.pt": lambda tmp: torch.save({"a": 1}, tmp),
        "out.nii.gz": lambda tmp: sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 2, 2), np.int16)), str(tmp)),
        "out.png": png,
        "out.json": lambda tmp: tmp.write_text("{}"),
    }


def test_outputs_honour_the_umask_whatever_the_library(tmp_path, umask_002):
    # A group-readable umask must give group-readable outputs: mkstemp's 0600 did not.
    for name, writer in _writers().items():
        write_with(tmp_path / name, writer)
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == umask_002, name


def test_a_write_removes_temporaries_left_by_killed_runs_of_that_file_only(tmp_path):
    stale = tmp_path / f".image{PARTIAL}dead0001.npy"
    stale.write_bytes(b"half")
    other_target = tmp_path / f".label{PARTIAL}dead0002.npy"
    other_target.write_bytes(b"half")
    user_file = tmp_path / ".image.npy.bak"
    user_file.write_bytes(b"mine")
    write_npy(tmp_path / "image.npy", np.zeros(3))
    assert not stale.exists() and other_target.exists() and user_file.exists()
    assert remove_stale_temps(tmp_path / "label.npy") == [other_target] and not other_target.exists()


def test_commit_folder_drops_the_old_marker_first_and_its_members_on_failure(tmp_path):
    for name, text in [("meta.json", '{"status": "ok"}'), ("image.npy", "old"), ("label.npy", "old"), ("notes.txt", "user")]:
        (tmp_path / name).write_text(text)
    with pytest.raises(RuntimeError):
        with commit_folder(tmp_path, "meta.json", ("image.npy", "label.npy")) as folder:
            # An interruption here (a SIGKILL included) finds no marker beside the new data.
            assert not (folder / "meta.json").exists()
            write_text(folder / "image.npy", "new")
            raise RuntimeError("bad input")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    with commit_folder(tmp_path, "meta.json", ("image.npy", "label.npy")) as folder:
        write_text(folder / "image.npy", "new")
        write_text(folder / "meta.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.npy", "meta.json", "notes.txt"]
