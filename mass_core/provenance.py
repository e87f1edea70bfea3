"""Provenance sidecars: what a table was built from.

Every table or manifest the pipeline writes gets ``<file>.provenance.json``
beside it, recording

- the git commit of the code (and whether tracked files had uncommitted changes),
- the SHA-256 of the run's configuration, and the configuration itself,
- each input: its MD5 (for a file, the same hash that DVC 3 stores for it)
  and, when the input lies in a DVC-tracked path, that path's hash as written
  in its ``.dvc`` pointer file (for a directory, DVC's ``.dir`` hash).

Directories (a raw dataset root, for example) are identified by their DVC
pointer only: hashing a whole dataset at every run would cost minutes, while
DVC caches that work (``docs/versioning.md``). The sidecar has no timestamps,
so rebuilding a table from the same inputs rewrites it byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

import mass_core
from mass_core.atomic import write_json

__all__ = ["config_sha256", "dvc_pointer", "file_md5", "git_state", "provenance_path", "write_provenance"]

SUFFIX = ".provenance.json"


def provenance_path(output: str | os.PathLike) -> Path:
    """The sidecar of ``output``: ``results/x/manifest.parquet`` -> ``results/x/manifest.parquet.provenance.json``."""
    output = Path(output)
    return output.with_name(output.name + SUFFIX)


def file_md5(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """MD5 of a file's bytes, read in chunks so that checkpoints of several GB fit in memory."""
    digest = hashlib.md5()
    with open(path, "rb") as stream:
        while chunk := stream.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def config_sha256(config: Mapping[str, Any]) -> str:
    """SHA-256 of the configuration as key-sorted JSON: equal settings give equal hashes whatever their order."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def git_state(cwd: str | os.PathLike = ".") -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the git work tree holding ``cwd``.

    ``dirty`` is true when tracked files differ from the commit, so that the
    commit alone does not describe the code that ran. Outside a git work tree
    (or without git) both are None.
    """
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip())}


def dvc_pointer(path: str | os.PathLike) -> dict[str, str] | None:
    """The DVC pointer covering ``path``: ``{"pointer": ".dvc file", "md5": hash}``, or None if untracked.

    The pointer is ``path.dvc`` or ``<ancestor>.dvc`` for the nearest tracked
    ancestor folder; its hash is that of the whole tracked path, as of the
    last ``dvc add``.
    """
    path = Path(path).absolute()
    for candidate in (path, *path.parents[:-1]):  # the file system root has no name to append .dvc to
        pointer = candidate.with_name(candidate.name + ".dvc")
        if pointer.is_file():
            outs = yaml.safe_load(pointer.read_text(encoding="utf-8")).get("outs", [])
            for out in outs:
                if (pointer.parent / out["path"]).absolute() == candidate:
                    return {"pointer": os.path.relpath(pointer), "md5": out["md5"]}
    return None


def _describe_input(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"provenance: input {path} does not exist")
    return {"path": str(path), "md5": file_md5(path) if path.is_file() else None, "dvc": dvc_pointer(path)}


def write_provenance(output: str | os.PathLike, inputs: Iterable[str | os.PathLike], config: Mapping[str, Any]) -> Path:
    """Write ``output``'s provenance sidecar (see the module docstring) and return its path.

    Args:
        output: the table just written; its own MD5 is recorded too, tying the sidecar to these exact bytes.
        inputs: files and folders the table was built from, in a stable order.
        config: the run's configuration (Snakemake's ``config``).

    Example:
        >>> write_provenance("results/phantom/manifest.parquet", metas, config)  # doctest: +SKIP
        PosixPath('results/phantom/manifest.parquet.provenance.json')
    """
    record = {
        "output": str(output),
        "output_md5": file_md5(output),
        "git": git_state(),
        "mass_core_version": mass_core.__version__,
        "config_sha256": config_sha256(config),
        "config": json.loads(json.dumps(config, default=str)),
        "inputs": [_describe_input(path) for path in inputs],
    }
    return write_json(provenance_path(output), record)
