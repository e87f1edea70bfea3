"""Atomic file writes and case folders that are either complete or visibly not.

A file is written to a temporary name in the target folder, then renamed, so
an interrupted run never leaves a half-written file under a final name that
a later run (or Snakemake) would take for complete. A folder of several
files (a standardized case, a proposal store, an evaluation run) has one
*marker* file written last; :func:`commit_folder` removes the marker before
anything else is rewritten, so the folder never pairs an old marker with new
data. Every file is created with the mode the process's umask allows, as
``open()`` would, so that the rest of a cluster group can read the results.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

__all__ = ["PARTIAL", "atomic_path", "commit_folder", "remove_stale_temps", "uncommit", "write_json", "write_npy",
           "write_text", "write_with"]

# Token in every temporary name, so that stale ones can be told from user files.
PARTIAL = ".partial-"


def _split_name(name: str) -> tuple[str, str]:
    """``image.nii.gz`` -> (``image``, ``.nii.gz``); the whole extension, which libraries read formats from."""
    stem, dot, extension = name.partition(".")
    return stem, f"{dot}{extension}" if dot else ".tmp"


def _temp_path(path: Path) -> Path:
    stem, extension = _split_name(path.name)
    while True:
        candidate = path.parent / f".{stem}{PARTIAL}{secrets.token_hex(4)}{extension}"
        try:
            # 0o666 filtered by the umask, as open() does; mkstemp's fixed 0600
            # would survive the rename and hide results from the user's group.
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return candidate
        except FileExistsError:
            continue


def remove_stale_temps(path: str | os.PathLike, keep: Path | None = None) -> list[Path]:
    """Delete the temporary files an interrupted write of ``path`` left behind; return them.

    Only names of the form ``.<stem>.partial-<token><extension>`` are touched,
    and one writer per output is assumed (Snakemake runs one job per output).
    """
    path = Path(path)
    stem, extension = _split_name(path.name)
    stale = [p for p in path.parent.glob(f".{stem}{PARTIAL}*{extension}") if p != keep and p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The temporary name keeps the whole extension (``.nii.gz``, not just
    ``.gz``), so libraries that pick a format from it (pandas, SimpleITK,
    matplotlib) still work. After the rename, temporaries of the same target
    left by killed runs are removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _temp_path(path)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
        remove_stale_temps(path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def commit_folder(folder: str | os.PathLike, marker: str, members: Iterable[str]) -> Iterator[Path]:
    """Rewrite a folder whose ``marker`` file, written last by the caller, marks it complete.

    On entry the marker goes first, then the ``members`` and any temporaries
    a killed run left, so an interruption at any point leaves a folder
    without a marker: incomplete, never an old marker beside new data. If the
    block raises, the members it wrote go too.

    Args:
        folder: the output folder (created if missing).
        marker: file name whose presence means "complete" (``meta.json``, ``summary.json``).
        members: the other file names the stage writes into ``folder``.
    """
    folder = Path(folder)
    names = uncommit(folder, marker, members)
    try:
        yield folder
    except BaseException:
        for name in names:
            (folder / name).unlink(missing_ok=True)
        raise


def uncommit(folder: str | os.PathLike, marker: str, members: Iterable[str]) -> list[str]:
    """Mark ``folder`` incomplete before a stage rewrites it: remove ``marker`` first, then the members.

    For stages too long to run inside :func:`commit_folder`: they call this on
    entry and write ``marker`` last. Returns the removed names, marker first.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = [marker, *members]
    for name in names:
        (folder / name).unlink(missing_ok=True)
        remove_stale_temps(folder / name)
    return names


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
