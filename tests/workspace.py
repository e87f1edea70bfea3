"""A throw-away copy of the project for tests that run the workflow for real.

Such tests must not share the repository's ``.snakemake`` folder, logs or git
state with other runs: they copy the files that define the workflow (not the
repository's ``.git``, so they work the same in a fresh clone and in a
developer's checkout) into a temporary folder and run there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# What a clone of the repository holds that running and versioning the workflow needs.
PROJECT_FILES = ["workflow", "config", "profiles", "slurm", ".dvc/config", ".dvc/.gitignore", ".dvcignore", ".gitignore"]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def copy_project(dest: Path) -> Path:
    """Copy the workflow, configs, profiles and DVC/git settings to ``dest``; return ``dest``."""
    for name in PROJECT_FILES:
        source, target = REPO / name, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(source.readlink())
        elif source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    return dest


def write_tiny_config(dest: Path, results: str = "results", root: str = "resources/phantom") -> Path:
    """``.test/config.yaml`` with the results and phantom folders moved under ``dest``'s relative paths."""
    config = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    config["results"] = results
    config["datasets"]["phantom"]["root"] = root
    path = dest / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command in ``cwd``; raise with the tail of its output if it fails."""
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result
