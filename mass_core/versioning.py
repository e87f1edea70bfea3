"""Snapshots of a finished run in DVC: raw data and the outputs worth keeping.

Snakemake stays the orchestrator; DVC only versions files, through one
``.dvc`` pointer per tracked path (committed to git beside the path) and a
remote that holds the content. ``snapshot`` tracks the given paths and pushes
them; ``docs/versioning.md`` describes the reverse (``dvc pull`` on a fresh
clone, then ``snakemake --touch`` so that the pulled files count as up to date).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from mass_core.atomic import write_json
from mass_core.provenance import dvc_pointer, git_state

__all__ = ["dvc", "project_root", "snapshot"]


def dvc(*args: str) -> str:
    """Run a DVC command in the working directory and return its output; raise with DVC's message on failure."""
    # The interpreter's own DVC, so that jobs need no dvc on PATH.
    result = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def project_root(start: str | os.PathLike = ".") -> Path:
    """The DVC project holding ``start``: the nearest folder with a ``.dvc`` subfolder."""
    start = Path(start).resolve()
    for folder in (start, *start.parents):
        if (folder / ".dvc").is_dir():
            return folder
    raise FileNotFoundError(f"{start} is not inside a DVC project (run `dvc init` at the repository root)")


def snapshot(paths: Sequence[str | os.PathLike], record: str | os.PathLike) -> dict[str, Any]:
    """Track ``paths`` with DVC, push them to the default remote, and write a record.

    Paths outside the DVC project cannot be tracked (DVC 3 has no external
    outputs); they are listed in the record as not versioned and reported on
    stderr. Tracking does not rewrite the workspace files (``--no-relink``),
    so their timestamps, and with them Snakemake's view of what is up to
    date, stay as they are.

    Args:
        paths: files and folders, upstream first (raw data, then outputs in pipeline order).
        record: JSON written at the end: git commit, each tracked path with its
            pointer and hash, and the paths left out.

    Returns:
        the record.
    """
    root = project_root()
    inside = [Path(p) for p in paths if Path(p).resolve().is_relative_to(root)]
    outside = [str(p) for p in paths if not Path(p).resolve().is_relative_to(root)]
    for path in outside:
        print(f"snapshot: {path} is outside the DVC project {root}; not versioned (see docs/versioning.md)", file=sys.stderr)
    if inside:
        dvc("add", "--no-relink", "--quiet", *map(str, inside))
        dvc("push", "--quiet", *(f"{p}.dvc" for p in inside))
    result = {
        "git": git_state(),
        "tracked": [{"path": str(p), **dvc_pointer(p)} for p in inside],
        "not_versioned": outside,
    }
    write_json(record, result)
    return result
