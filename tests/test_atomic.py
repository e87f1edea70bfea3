from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from mass_core.atomic import atomic_path, write_json, write_npy, write_with


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
