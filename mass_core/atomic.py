"""Atomic file writes: a temporary file in the target folder, then a rename.

An interrupted run therefore never leaves a half-written file under a final
name that a later run (or Snakemake) would take for complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

__all__ = ["atomic_path", "write_json", "write_npy", "write_text", "write_with"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The temporary name keeps the whole extension (``.nii.gz``, not just
    ``.gz``), so libraries that pick a format from it (pandas, SimpleITK,
    matplotlib) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem, dot, extension = path.name.partition(".")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{stem}.", suffix=f"{dot}{extension}" if dot else ".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_with(path: str | os.PathLike, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Save ``array`` as an uncompressed ``.npy`` (readable with ``mmap_mode='r'``)."""
    return write_with(path, lambda tmp: np.save(tmp, np.ascontiguousarray(array)))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Save ``obj`` as indented, key-sorted JSON (stable bytes for equal content)."""
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    return write_text(path, text)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Save ``text`` as UTF-8."""
    return write_with(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
