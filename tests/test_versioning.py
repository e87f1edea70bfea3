"""DVC snapshots: a finished run is versioned, and a fresh clone restores it without recomputing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from mass_core.versioning import project_root
from workspace import SNAKEMAKE, copy_project, run, write_tiny_config

DVC = [sys.executable, "-m", "dvc"]
GIT = ["git", "-c", "user.name=MASS tests", "-c", "user.email=tests@example.org"]
# What `snakemake snapshot` versions for the tiny config, and so what a clone pulls.
VERSIONED = ["resources/phantom", "results/phantom", "results/pretrain", "results/evaluation", "results/tables", "results/plots"]


def test_project_root_is_the_folder_with_dot_dvc(tmp_path):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert project_root(tmp_path / "a" / "b") == tmp_path
    with pytest.raises(FileNotFoundError, match="dvc init"):
        project_root(tmp_path.parent)


def digests(root: Path) -> dict[str, str]:
    """MD5 of every file under the versioned paths, by path relative to ``root``."""
    files = [p for name in VERSIONED for p in ([root / name] if (root / name).is_file() else sorted((root / name).rglob("*")))]
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in files if p.is_file()}


def planned_jobs(workdir: Path) -> str:
    """What `snakemake -n all` prints (its plan, or that nothing is to be done)."""
    result = run([*SNAKEMAKE, "-n", "all", "--configfile", "tiny.yaml"], workdir)
    return result.stdout + result.stderr


@pytest.mark.slow
def test_snapshot_then_fresh_clone_pull_reuses_everything(tmp_path):
    repo = copy_project(tmp_path / "repo")
    write_tiny_config(repo)
    run([*GIT, "init", "-q"], repo)
    run([*GIT, "add", "-A"], repo)
    run([*GIT, "commit", "-qm", "workflow"], repo)
    run([*SNAKEMAKE, "--cores", "2", "all", "--configfile", "tiny.yaml"], repo)

    run([*SNAKEMAKE, "--cores", "1", "snapshot", "--configfile", "tiny.yaml"], repo)
    record = json.loads((repo / "results/snapshot.json").read_text())
    assert [entry["path"] for entry in record["tracked"]] == VERSIONED and record["not_versioned"] == []
    # The snapshot neither rewrote nor outdated anything, and staged its pointers for the commit.
    assert "Nothing to be done" in planned_jobs(repo)
    staged = run(["git", "diff", "--cached", "--name-only"], repo).stdout.split()
    assert sorted(staged) == sorted(f"{name}.dvc" for name in VERSIONED)
    run([*GIT, "commit", "-qm", "snapshot"], repo)
    original = digests(repo)
    assert {"results/phantom/manifest.parquet", "results/pretrain/mass/final.pt", "results/pretrain/scratch/encoder.pt"} <= set(original)

    # Only git and the remote survive: outputs and the local DVC cache go.
    for name in ("results", "resources", ".dvc/cache"):
        shutil.rmtree(repo / name)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    run([*DVC, "pull", "--quiet"], clone)
    assert digests(clone) == original

    # The pitfall: pulled files get fresh timestamps in any order; at worst
    # the tables are written before the raw data they were built from.
    earlier = min(p.stat().st_mtime for p in (clone / "resources/phantom").rglob("*")) - 60
    for path in (clone / "results").rglob("*"):
        os.utime(path, (earlier, earlier))
    assert "standardize" in planned_jobs(clone)
    # The documented restore step marks the pulled files up to date, in DAG order.
    run([*SNAKEMAKE, "--touch", "--cores", "1", "all", "--configfile", "tiny.yaml"], clone)
    assert "Nothing to be done" in planned_jobs(clone)
    assert digests(clone) == original
