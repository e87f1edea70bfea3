"""What GPU jobs and pretraining jobs ask of SLURM, as resources of the Snakemake SLURM executor plugin.

The rules take these dicts as ``resources: **...`` (``workflow/rules/common.smk``
fills in ``cluster.gpus_per_job``, ``cluster.gpu_request``, ``pretrain.processes``
and ``pretrain.nodes``); ``docs/cluster.md`` shows the sbatch calls the plugin
(2.8) builds from them.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["GPU_REQUESTS", "GpuRequest", "gpu_resources", "pretrain_resources"]

GpuRequest = Literal["gpus", "gres"]
# Values of config cluster.gpu_request: sbatch --gpus=N, or --gres=gpu:N for clusters that reject --gpus.
GPU_REQUESTS: tuple[GpuRequest, ...] = ("gpus", "gres")


def _check(gpu_request: str, *counts: tuple[str, int, int]) -> None:
    """Raise ``ValueError`` for a ``gpu_request`` outside :data:`GPU_REQUESTS` or a ``(name, value, least)`` below its least."""
    if gpu_request not in GPU_REQUESTS:
        raise ValueError(f"gpu_request must be one of {', '.join(map(repr, GPU_REQUESTS))}, got {gpu_request!r}")
    for name, value, least in counts:
        if value < least:
            raise ValueError(f"{name} must be >= {least}, got {value}")


def gpu_resources(gpus: int, gpu_request: GpuRequest) -> dict[str, int | str]:
    """Resources of a job on one node that wants ``gpus`` GPUs; nothing when ``gpus`` is 0.

    Args:
        gpus: GPUs of the job (config cluster.gpus_per_job for the evaluation jobs).
        gpu_request: ``"gpus"`` gives ``gpu=N``, which the plugin passes as
            --gpus=N; ``"gres"`` gives ``gres="gpu:N"``, passed as --gres=gpu:N.

    Example:
        >>> gpu_resources(2, "gres")
        {'gres': 'gpu:2'}
    """
    _check(gpu_request, ("gpus", gpus, 0))
    if gpus == 0:
        return {}
    return {"gpu": gpus} if gpu_request == "gpus" else {"gres": f"gpu:{gpus}"}


def pretrain_resources(processes: int, nodes: int, gpus_per_job: int, gpu_request: GpuRequest) -> dict[str, int | str]:
    """Resources of a pretraining job: ``nproc_per_node`` for its launcher, and its nodes and GPUs.

    Each node gets a GPU per process (``gpus_per_job`` when that is more),
    none when ``gpus_per_job`` is 0. On one node the plugin's GPU request
    (:func:`gpu_resources`) applies, and its jobstep starts the job with
    ``srun -n1``. On several, ``mpi`` makes the jobstep run the job on the
    first node without srun, so that the launcher in the job
    (:mod:`mass_core.pretrain.launch`) can call srun with one task per node
    (``tasks`` becomes sbatch --ntasks); the GPUs are requested per node, as
    --gpus-per-node (``slurm_extra``; the plugin's --gpus counts over the whole
    job) or --gres=gpu:N (per node in SLURM), where ``tasks_per_gpu: 0`` stops
    the plugin from turning ``tasks`` into --ntasks-per-gpu.

    Args:
        processes: training processes per node (config pretrain.processes).
        nodes: nodes of the job (config pretrain.nodes).
        gpus_per_job: config cluster.gpus_per_job; 0 requests no GPU.
        gpu_request: config cluster.gpu_request, as for :func:`gpu_resources`.

    Example:
        >>> pretrain_resources(4, 2, 1, "gpus")
        {'nproc_per_node': 4, 'nodes': 2, 'tasks': 2, 'mpi': 'srun', 'slurm_extra': '--gpus-per-node=4'}
    """
    _check(gpu_request, ("processes", processes, 1), ("nodes", nodes, 1), ("gpus_per_job", gpus_per_job, 0))
    gpus = max(gpus_per_job, processes) if gpus_per_job else 0
    resources: dict[str, int | str] = {"nproc_per_node": processes}
    if nodes == 1:
        return resources | gpu_resources(gpus, gpu_request)
    resources |= {"nodes": nodes, "tasks": nodes, "mpi": "srun"}
    if gpus and gpu_request == "gpus":
        resources["slurm_extra"] = f"--gpus-per-node={gpus}"
    elif gpus:
        resources |= {"gres": f"gpu:{gpus}", "tasks_per_gpu": 0}
    return resources
