"""The SLURM executor plugin's resources of GPU jobs and of pretraining jobs on several processes or nodes."""

from __future__ import annotations

import itertools
import re

import pytest
import yaml

from mass_core.pretrain.launch import LAUNCH_KEYS
from mass_core.slurm_resources import gpu_resources, pretrain_resources
from workspace import REPO

ONE = {"nproc_per_node": 1}
TWO_NODES = {"nodes": 2, "tasks": 2, "mpi": "srun"}

# (processes, nodes, cluster.gpus_per_job, cluster.gpu_request) -> resources, in the order a dry run prints them.
# Written out by hand from docs/cluster.md: a GPU per process (gpus_per_job when more), none when gpus_per_job is 0;
# on one node the plugin's gpu/gres, on several one task per node and GPUs per node.
EXPECTED = {
    (1, 1, 0, "gpus"): ONE,
    (1, 1, 0, "gres"): ONE,
    (1, 1, 1, "gpus"): {"nproc_per_node": 1, "gpu": 1},
    (1, 1, 1, "gres"): {"nproc_per_node": 1, "gres": "gpu:1"},
    (1, 1, 4, "gpus"): {"nproc_per_node": 1, "gpu": 4},
    (1, 1, 4, "gres"): {"nproc_per_node": 1, "gres": "gpu:4"},
    (2, 1, 0, "gpus"): {"nproc_per_node": 2},
    (2, 1, 0, "gres"): {"nproc_per_node": 2},
    (2, 1, 1, "gpus"): {"nproc_per_node": 2, "gpu": 2},
    (2, 1, 1, "gres"): {"nproc_per_node": 2, "gres": "gpu:2"},
    (2, 1, 4, "gpus"): {"nproc_per_node": 2, "gpu": 4},
    (2, 1, 4, "gres"): {"nproc_per_node": 2, "gres": "gpu:4"},
    (4, 1, 0, "gpus"): {"nproc_per_node": 4},
    (4, 1, 0, "gres"): {"nproc_per_node": 4},
    (4, 1, 1, "gpus"): {"nproc_per_node": 4, "gpu": 4},
    (4, 1, 1, "gres"): {"nproc_per_node": 4, "gres": "gpu:4"},
    (4, 1, 4, "gpus"): {"nproc_per_node": 4, "gpu": 4},
    (4, 1, 4, "gres"): {"nproc_per_node": 4, "gres": "gpu:4"},
    (1, 2, 0, "gpus"): ONE | TWO_NODES,
    (1, 2, 0, "gres"): ONE | TWO_NODES,
    (1, 2, 1, "gpus"): ONE | TWO_NODES | {"slurm_extra": "--gpus-per-node=1"},
    (1, 2, 1, "gres"): ONE | TWO_NODES | {"gres": "gpu:1", "tasks_per_gpu": 0},
    (1, 2, 4, "gpus"): ONE | TWO_NODES | {"slurm_extra": "--gpus-per-node=4"},
    (1, 2, 4, "gres"): ONE | TWO_NODES | {"gres": "gpu:4", "tasks_per_gpu": 0},
    (2, 2, 0, "gpus"): {"nproc_per_node": 2} | TWO_NODES,
    (2, 2, 0, "gres"): {"nproc_per_node": 2} | TWO_NODES,
    (2, 2, 1, "gpus"): {"nproc_per_node": 2} | TWO_NODES | {"slurm_extra": "--gpus-per-node=2"},
    (2, 2, 1, "gres"): {"nproc_per_node": 2} | TWO_NODES | {"gres": "gpu:2", "tasks_per_gpu": 0},
    (2, 2, 4, "gpus"): {"nproc_per_node": 2} | TWO_NODES | {"slurm_extra": "--gpus-per-node=4"},
    (2, 2, 4, "gres"): {"nproc_per_node": 2} | TWO_NODES | {"gres": "gpu:4", "tasks_per_gpu": 0},
    (4, 2, 0, "gpus"): {"nproc_per_node": 4} | TWO_NODES,
    (4, 2, 0, "gres"): {"nproc_per_node": 4} | TWO_NODES,
    (4, 2, 1, "gpus"): {"nproc_per_node": 4} | TWO_NODES | {"slurm_extra": "--gpus-per-node=4"},
    (4, 2, 1, "gres"): {"nproc_per_node": 4} | TWO_NODES | {"gres": "gpu:4", "tasks_per_gpu": 0},
    (4, 2, 4, "gpus"): {"nproc_per_node": 4} | TWO_NODES | {"slurm_extra": "--gpus-per-node=4"},
    (4, 2, 4, "gres"): {"nproc_per_node": 4} | TWO_NODES | {"gres": "gpu:4", "tasks_per_gpu": 0},
}


def _schema() -> dict:
    return yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())["properties"]


def test_the_table_covers_every_combination_the_schema_allows():
    assert set(EXPECTED) == set(itertools.product([1, 2, 4], [1, 2], [0, 1, 4], _schema()["cluster"]["properties"]["gpu_request"]["enum"]))


@pytest.mark.parametrize("processes, nodes, gpus_per_job, gpu_request", sorted(EXPECTED))
def test_pretraining_resources(processes, nodes, gpus_per_job, gpu_request):
    resources = pretrain_resources(processes, nodes, gpus_per_job, gpu_request)
    # Items, not the dict: the order shows in the dry run's listing of the job.
    assert list(resources.items()) == list(EXPECTED[processes, nodes, gpus_per_job, gpu_request].items())


@pytest.mark.parametrize("gpus, gpu_request, expected", [(0, "gpus", {}), (0, "gres", {}), (2, "gpus", {"gpu": 2}), (1, "gres", {"gres": "gpu:1"})])
def test_gpu_job_resources(gpus, gpu_request, expected):
    assert gpu_resources(gpus, gpu_request) == expected


@pytest.mark.parametrize("processes, nodes, gpu_request, sbatch", [
    # The sbatch calls of docs/cluster.md, with the profile's pretrain resources.
    (4, 1, "gpus", "-t 1440 --mem 64000 --cpus-per-task=8 -D /work --gpus=4"),
    (4, 2, "gpus", "-t 1440 --mem 64000 --nodes=2 --ntasks=2 --cpus-per-task=8 --gpus-per-node=4 -D /work"),
    (4, 2, "gres", "-t 1440 --mem 64000 --nodes=2 --ntasks=2 --cpus-per-task=8 -D /work --gres=gpu:4"),
])
def test_the_plugin_turns_them_into_the_documented_sbatch_options(processes, nodes, gpu_request, sbatch):
    submit = pytest.importorskip("snakemake_executor_plugin_slurm.submit_string")
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Resources(dict):
        __getattr__ = dict.__getitem__

    resources = Resources(runtime=1440, mem_mb=64000, cpus_per_task=8, **pretrain_resources(processes, nodes, 1, gpu_request))
    job = type("Job", (), {"resources": resources, "threads": 1})()
    params = {"run_uuid": "RUN", "slurm_logfile": "LOG", "comment_str": "C", "account": "-A mass", "partition": "-p gpu", "workdir": "/work"}
    call = submit.get_submit_command(job, params) + set_gres_string(job)
    assert call == f"sbatch --parsable --job-name RUN --output LOG --export=ALL --comment C -A mass -p gpu {sbatch}"


@pytest.mark.parametrize("call, message", [
    (lambda: gpu_resources(1, "gpu"), "gpu_request must be one of 'gpus', 'gres', got 'gpu'"),
    (lambda: gpu_resources(-1, "gpus"), "gpus must be >= 0, got -1"),
    (lambda: pretrain_resources(2, 1, -1, "gres"), "gpus_per_job must be >= 0, got -1"),
    (lambda: pretrain_resources(0, 1, 1, "gpus"), "processes must be >= 1, got 0"),
    (lambda: pretrain_resources(1, 0, 1, "gpus"), "nodes must be >= 1, got 0"),
    (lambda: pretrain_resources(1, 2, 1, "GPUs"), "gpu_request must be one of 'gpus', 'gres', got 'GPUs'"),
])
def test_bad_arguments_name_themselves(call, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call()


def test_launch_keys_are_pretrain_settings():
    # scratch_settings drops them from init_scratch's params: a renamed key would silently become a rerun trigger.
    assert set(LAUNCH_KEYS) <= set(_schema()["pretrain"]["properties"])
