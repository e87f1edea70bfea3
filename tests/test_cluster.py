"""The SLURM profile: its settings, job grouping, and a real run on a one-node SLURM cluster."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

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


# The CPU data stages of the tiny config: generator, per-case groups
# (standardize + propose), manifest and proposal recall. Pretraining and
# evaluation add minutes of scheduler polling per stage and nothing the
# profile does differently for them (their GPU requests are tested above).
DATA_TARGETS = ["results/phantom/manifest.parquet", "results/phantom/proposals/recall.parquet"]


@pytest.mark.slow
def test_tiny_config_runs_through_slurm_like_locally(slurm_cluster, tmp_path):
    slurm_dir, local_dir = copy_project(tmp_path / "slurm"), copy_project(tmp_path / "local")
    for workdir in (slurm_dir, local_dir):
        write_tiny_config(workdir)
    # The node has 2 cores: group jobs must ask for no more than it has.
    cores = str(min(os.cpu_count() or 1, 2))
    result = run([*SNAKEMAKE, "--profile", "slurm", *DATA_TARGETS, "--configfile", "tiny.yaml", "--cores", cores,
                  "--resources", "mem_mb=8000", "--slurm-init-seconds-before-status-checks", "2",
                  "--seconds-between-status-checks", "2"], slurm_dir, env=slurm_env(), timeout=900)
    run([*SNAKEMAKE, "--cores", "2", *DATA_TARGETS, "--configfile", "tiny.yaml"], local_dir)

    # Every job went through SLURM: the generator, group jobs of the per-case rules, manifest, recall.
    log = result.stdout + result.stderr
    submitted = dict(re.findall(r"submitted with SLURM jobid (\d+) \(log: \S+/slurm_logs/(\w+)", log))
    names = sorted(submitted.values())
    assert {"rule_generate_phantom", "rule_manifest", "rule_proposal_recall"} <= set(names), names
    assert any(name.startswith("group_cases") for name in names), names
    assert "localrule" not in log
    sacct = run(["sacct", "-X", "-n", "-P", "-o", "JobID,State,Account", "-j", ",".join(submitted)], slurm_dir).stdout
    states = {line.split("|")[0]: line.split("|")[1:] for line in sacct.splitlines()}
    assert states == {job: ["COMPLETED", ACCOUNT] for job in submitted}

    # The same bytes as a local run.
    slurm_manifest = pd.read_parquet(slurm_dir / "results/phantom/manifest.parquet")
    pd.testing.assert_frame_equal(slurm_manifest, pd.read_parquet(local_dir / "results/phantom/manifest.parquet"))
    assert len(slurm_manifest) == 6
    arrays = sorted((slurm_dir / "results/phantom/standardized").glob("*/*.npy"))
    assert len(arrays) == 12
    for array in arrays:
        assert _digest(array) == _digest(local_dir / array.relative_to(slurm_dir)), array
    pd.testing.assert_frame_equal(pd.read_parquet(slurm_dir / DATA_TARGETS[1]), pd.read_parquet(local_dir / DATA_TARGETS[1]))


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
