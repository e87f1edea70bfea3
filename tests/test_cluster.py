"""The SLURM profile: its settings, job grouping, and a real run on a one-node SLURM cluster."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from fnmatch import fnmatch
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from workspace import REPO, SNAKEMAKE, copy_project, run, write_tiny_config

CLUSTER_SCRIPTS = REPO / "tests" / "slurm"
ACCOUNT, PARTITION = "mass", "debug"
DAEMONS = ["slurmctld", "slurmd", "slurmdbd", "sbatch", "munged", "mariadbd"]


def slurm_env(**extra: str) -> dict[str, str]:
    """The environment of a run with the slurm profile, without a SLURM_CONF that would point elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return env | {"MASS_SLURM_ACCOUNT": ACCOUNT, "MASS_SLURM_PARTITION": PARTITION} | extra


def planned_submissions(workdir: Path, *args: str) -> Counter:
    """Jobs that `snakemake --profile slurm all -n --forceall` plans, by rule, with group jobs counted as "group cases".

    Every entry is one SLURM submission, except `all`, which the dry run lists
    as a rule but a real run executes locally.
    """
    out = run([*SNAKEMAKE, "--profile", "slurm", "all", "-n", "--forceall", *args], workdir, env=slurm_env()).stdout
    # Members of a group job are listed indented under it; local rules print as "localrule".
    submissions = Counter(re.findall(r"^rule (\w+):", out, flags=re.MULTILINE))
    submissions["group cases"] = out.count("Group job cases")
    return submissions


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A copy of the project with the default config, for dry runs."""
    return copy_project(tmp_path_factory.mktemp("slurm"))


def test_literal_profile_command_resolves_and_groups_cases(workdir):
    # The default config: 64 phantom cases, 8 per group job (profiles/slurm group-components).
    grouped = planned_submissions(workdir)
    assert grouped["group cases"] == 8 and grouped["standardize"] == 0
    (workdir / "nogroup.yaml").write_text("cluster: {group_cases: false}\n")
    ungrouped = planned_submissions(workdir, "--configfile", "nogroup.yaml")
    assert ungrouped["group cases"] == 0 and ungrouped["standardize"] == 64


def test_profile_requires_an_explicit_account(workdir):
    env = slurm_env()
    del env["MASS_SLURM_ACCOUNT"]
    result = subprocess.run([*SNAKEMAKE, "--profile", "slurm", "all", "-n"], cwd=workdir, env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "set MASS_SLURM_ACCOUNT" in result.stderr


def test_gpu_request_style_comes_from_config(workdir):
    # No GPU rule exists yet in every checkout, so the helper is asked directly through a one-rule Snakefile.
    snakefile = workdir / "gpu.smk"
    snakefile.write_text(
        'configfile: "config/config.yaml"\ninclude: "workflow/rules/common.smk"\n'
        'rule gpu_job:\n    output: "gpu.txt"\n    resources: **gpu_resources()\n    shell: "touch {output}"\n'
    )
    for cluster, expected in [("{gpus_per_job: 2, gpu_request: gpus}", "gpu=2"), ("{gpus_per_job: 1, gpu_request: gres}", "gres=gpu:1")]:
        (workdir / "gpu.yaml").write_text(f"cluster: {cluster}\n")
        out = run([*SNAKEMAKE, "-s", str(snakefile), "-n", "--profile", "slurm", "--configfile", "gpu.yaml"], workdir, env=slurm_env()).stdout
        assert expected in out


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A one-node SLURM cluster with accounting, started by tests/slurm/start_cluster.sh and stopped by PID."""
    if os.geteuid() != 0:
        pytest.skip("starting SLURM daemons needs root")
    if not all(shutil.which(d) for d in DAEMONS) and not shutil.which("apt-get"):
        pytest.skip("SLURM is not installed and apt-get is not available to install it")
    conf = Path("/etc/slurm/slurm.conf")
    if conf.exists() and "start_cluster.sh" not in conf.read_text():
        pytest.skip(f"{conf} belongs to a real SLURM installation")
    state = tmp_path_factory.mktemp("slurm-state")
    # Other checkouts on this machine may run this test too: there is one /etc/slurm.
    with open("/tmp/mass-slurm-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            run(["bash", str(CLUSTER_SCRIPTS / "start_cluster.sh"), str(state), ACCOUNT], REPO, timeout=900)
            yield state
        finally:
            subprocess.run(["bash", str(CLUSTER_SCRIPTS / "stop_cluster.sh"), str(state)], timeout=120)


def _digest(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# The whole DAG of the tiny config with one pretext method and one label
# budget: MASS alone still runs every rule kind (proposals, pretraining,
# finetuning of the whole model, in-context few-shot, probe, the learning curve
# from a snapshot, tables and plots) in 14 submissions. No GPU request: the
# test node has none.
DAG_CONFIG = {
    "pretrain": {"methods": ["mass"]},
    "evaluation": {"mass_finetune": ["whole"], "label_fractions": [], "label_counts": [1]},
    "cluster": {"gpus_per_job": 0},
}


def node_size() -> tuple[int, int]:
    """CPUs and memory (MB) of the cluster's one node, as slurm.conf declares them."""
    cpus, mem_mb = run(["sinfo", "-h", "-N", "-o", "%c %m"], REPO).stdout.split()
    return int(cpus), int(mem_mb)


def fit_profile_to_node(workdir: Path, cpus: int) -> None:
    """Lower every per-rule cpus_per_task of the copy's slurm profile to `cpus`, what the node offers.

    `--cores` caps what sbatch asks for, but the job's own srun step asks for
    the profile's cpus_per_task and fails ("More processors requested than
    permitted"); docs/cluster.md tells sites to edit a copy of the profile alike.
    """
    profile = workdir / "profiles" / "slurm" / "config.yaml"
    text, count = re.subn(r"^(\s*cpus_per_task:).*$", rf"\g<1> {cpus}", profile.read_text(), flags=re.MULTILINE)
    assert count, f"{profile}: no cpus_per_task to fit to the node"
    profile.write_text(text)


def job_stats(log: str) -> Counter:
    """The jobs by rule of the "Job stats" table that a run prints when it starts."""
    table = log[log.index("Job stats:"):].split("\ntotal")[0]
    return Counter({rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE)})


# Columns that time a run rather than describe its results.
TIMING_COLUMNS = ["seconds", "wall_s", "samples_per_s", "data_fraction"]
# Outputs not compared (fnmatch patterns: * spans folders): provenance records
# the md5 of checkpoint files, whose bytes differ between runs (torch.save names
# the archive inside after the atomic write's temporary file), and evaluation
# summaries record times.
NOT_COMPARED = ["*.provenance.json", "evaluation/*/summary.json"]


def _tensors(obj, prefix: str = ""):
    """(path, tensor) of every tensor in a checkpoint's nested dicts."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f"{prefix}/{key}")


def assert_same_result(path: Path, reference: Path) -> None:
    """The two files hold the same results, as their type allows: bytes, tables less timing columns, JSON, HDF5 data, tensors."""
    suffix = path.suffix
    if suffix in (".npy", ".png", ".md"):
        assert _digest(path) == _digest(reference), path
    elif suffix == ".npz":
        with np.load(path) as ours, np.load(reference) as theirs:
            assert ours.files == theirs.files and all(np.array_equal(ours[k], theirs[k]) for k in ours.files), path
    elif suffix in (".parquet", ".csv"):
        read = pd.read_parquet if suffix == ".parquet" else pd.read_csv
        ours, theirs = (read(p).drop(columns=TIMING_COLUMNS, errors="ignore") for p in (path, reference))
        pd.testing.assert_frame_equal(ours, theirs, check_exact=True, obj=str(path))
    elif suffix == ".json":
        assert json.loads(path.read_text()) == json.loads(reference.read_text()), path
    elif suffix == ".h5":
        with h5py.File(path) as ours, h5py.File(reference) as theirs:
            names = _h5_names(ours)
            assert names == _h5_names(theirs), path
            for name in names:
                if isinstance(ours[name], h5py.Dataset):
                    assert np.array_equal(ours[name][()], theirs[name][()]), f"{path}: {name}"
    elif suffix == ".pt":
        ours, theirs = (dict(_tensors(torch.load(p, map_location="cpu", weights_only=False))) for p in (path, reference))
        assert ours.keys() == theirs.keys() and ours, path
        for key, tensor in ours.items():
            assert torch.equal(tensor, theirs[key]), f"{path}: {key}"
    else:
        raise AssertionError(f"{path}: no comparison for {suffix} files")


def _h5_names(file: h5py.File) -> list[str]:
    names: list[str] = []
    file.visit(names.append)
    return names


@pytest.mark.slow
def test_tiny_config_runs_through_slurm_like_locally(slurm_cluster, tmp_path):
    slurm_dir, local_dir = copy_project(tmp_path / "slurm"), copy_project(tmp_path / "local")
    for workdir in (slurm_dir, local_dir):
        write_tiny_config(workdir)
        (workdir / "dag.yaml").write_text(yaml.safe_dump(DAG_CONFIG))
    configs = ["--configfile", "tiny.yaml", "dag.yaml"]
    # A job that asks for more than the node has stays pending forever. Every
    # job is capped at half the node, the per-case groups at its cores, so that
    # two jobs run side by side as on a cluster of several nodes.
    cpus, mem_mb = node_size()
    fit_profile_to_node(slurm_dir, max(cpus // 2, 1))
    # Status checks: the first 2 s after submission (default 40 s); the plugin then
    # waits 10 s longer after every check that finds no job finished (at most
    # 180 s) and back to 2 s after one that does, whatever --seconds-between-status-checks
    # says. sacct, not squeue: it reports why a job failed and is what production uses.
    result = run([*SNAKEMAKE, "--profile", "slurm", "all", *configs, "--cores", str(cpus),
                  "--resources", f"mem_mb={mem_mb // 2}", "--slurm-init-seconds-before-status-checks", "2",
                  "--slurm-status-command", "sacct"], slurm_dir, env=slurm_env(), timeout=1200)
    run([*SNAKEMAKE, "--cores", "2", "all", *configs], local_dir, timeout=1200)

    # Every job but `all` went through SLURM, once: the per-case rules as group jobs, every other rule alone.
    log = result.stdout + result.stderr
    submitted = dict(re.findall(r"submitted with SLURM jobid (\d+) \(log: \S+/slurm_logs/(\w+)", log))
    by_rule = Counter(name.removeprefix("rule_") for name in submitted.values() if not name.startswith("group_cases"))
    planned = job_stats(log)
    assert by_rule == planned - Counter({"all": 1, "standardize": planned["standardize"], "propose": planned["propose"]})
    assert {"pretrain", "finetune_seg", "incontext_fewshot", "linear_probe", "curve_finetune", "aggregate"} <= set(by_rule)
    assert any(name.startswith("group_cases") for name in submitted.values()), submitted
    assert re.findall(r"^localrule (\w+):", log, flags=re.MULTILINE) == ["all"]
    sacct = run(["sacct", "-X", "-n", "-P", "-o", "JobID,State,Account", "-j", ",".join(submitted)], slurm_dir).stdout
    states = {line.split("|")[0]: line.split("|")[1:] for line in sacct.splitlines()}
    assert states == {job: ["COMPLETED", ACCOUNT] for job in submitted}

    # The same results as a local run, file by file.
    results, reference = slurm_dir / "results", local_dir / "results"
    files = sorted(p.relative_to(results) for p in results.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(reference) for p in reference.rglob("*") if p.is_file())
    compared = [f for f in files if not any(fnmatch(str(f), pattern) for pattern in NOT_COMPARED)]
    for name in compared:
        assert_same_result(results / name, reference / name)
    assert len(list(results.glob("phantom/standardized/*/*.npy"))) == 12
    assert {f.suffix for f in compared} == {".npy", ".npz", ".parquet", ".csv", ".json", ".h5", ".pt", ".png", ".md"}


def _pretrain_resources(workdir: Path, config: str) -> dict[str, int | str]:
    """The resources of the pretrain job that `snakemake --profile slurm -n` plans with `config` added."""
    (workdir / "launch.yaml").write_text(config)
    out = run([*SNAKEMAKE, "--profile", "slurm", "-n", "--forceall", "results/pretrain/mim/final.pt", "--configfile", "launch.yaml"], workdir,
              env=slurm_env(MASS_SLURM_GPU_PARTITION="gpu")).stdout
    block = out.split("rule pretrain:", 1)[1]
    line = next(line for line in block.splitlines() if line.strip().startswith("resources:"))
    pairs = (item.split("=", 1) for item in line.split("resources:", 1)[1].strip().split(", "))
    return {key: int(value) if value.isdigit() else value for key, value in pairs if value != "<TBD>"}


@pytest.mark.parametrize("config, sbatch", [
    # One node, 4 processes: the plugin's --gpus; the jobstep runs the rule under `srun -n1`, which starts torchrun --standalone.
    ("pretrain: {processes: 4, train: {batch_size: 8}}\ncluster: {gpus_per_job: 1}\n",
     "-t 1440 --mem 64000 --cpus-per-task=8 -D /work --gpus=4"),
    # Two nodes: one task per node (the rule's srun starts a torchrun on each), GPUs per node.
    ("pretrain: {processes: 4, nodes: 2, train: {batch_size: 8}}\ncluster: {gpus_per_job: 1}\n",
     "-t 1440 --mem 64000 --nodes=2 --ntasks=2 --cpus-per-task=8 --gpus-per-node=4 -D /work"),
    ("pretrain: {processes: 4, nodes: 2, train: {batch_size: 8}}\ncluster: {gpus_per_job: 1, gpu_request: gres}\n",
     "-t 1440 --mem 64000 --nodes=2 --ntasks=2 --cpus-per-task=8 -D /work --gres=gpu:4"),
])
def test_pretraining_processes_and_nodes_become_these_sbatch_options(workdir, config, sbatch):
    # The plugin's own functions build the sbatch call from the planned job's resources.
    submit = pytest.importorskip("snakemake_executor_plugin_slurm.submit_string")
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Resources(dict):
        __getattr__ = dict.__getitem__

    resources = _pretrain_resources(workdir, config)
    job = type("Job", (), {"resources": Resources(resources), "threads": 1})()
    params = {"run_uuid": "RUN", "slurm_logfile": "LOG", "comment_str": "rule_pretrain_wildcards_mim", "account": f"-A {ACCOUNT}",
              "partition": "-p gpu", "workdir": "/work"}
    call = submit.get_submit_command(job, params) + set_gres_string(job)
    assert call == f"sbatch --parsable --job-name RUN --output LOG --export=ALL --comment rule_pretrain_wildcards_mim -A {ACCOUNT} -p gpu {sbatch}"
    # Several nodes: the jobstep runs the rule on the first node without srun (`mpi`), so that the rule can call srun itself.
    assert ("mpi" in resources) == ("nodes: 2" in config)
