"""Start a pretraining run on one process, on several (torchrun) or on several nodes (srun + torchrun).

One process runs :func:`~mass_core.pretrain.run.run_pretraining` in the
calling process, as a single-process run always has. More processes run
``python -m mass_core.pretrain`` under torchrun (``python -m
torch.distributed.run``), which sets ``RANK`` / ``WORLD_SIZE`` for
:mod:`~mass_core.pretrain.distributed`:

- one node: ``torchrun --standalone --nnodes=1 --nproc-per-node=N``;
- several nodes (inside a SLURM allocation): ``srun`` starts one torchrun per
  node, and they meet by c10d rendezvous on the calling host (the first node
  of the allocation, where the batch script runs).

``pretrain.train.batch_size`` is the global batch, split evenly over the
processes, so the run's weights do not depend on how it was launched. Exit
status as for one process: 0 when ``final.pt`` exists, 75 when the run
stopped early and left ``latest.pt``, torchrun's (non-zero) status when a
worker failed.
"""

from __future__ import annotations

import os
import secrets
import shlex
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from mass_core.atomic import write_json
from mass_core.pretrain.run import run_pretraining
from mass_core.pretrain.trainer import EXIT_RESUMABLE, FINAL_FILE

__all__ = ["LAUNCH_KEYS", "LaunchPlan", "Rendezvous", "launch_pretraining", "worker_command"]

PathLike = str | os.PathLike
# Keys of config section `pretrain` that say only how a run is launched (LaunchPlan): they change no weights.
LAUNCH_KEYS = ("processes", "nodes")
# Settings handed to the workers; removed when they are done.
SETTINGS_FILE = ".launch_settings.json"


@dataclass(frozen=True)
class LaunchPlan:
    """How many processes train, and where.

    Args:
        processes: training processes per node (one per GPU on GPU nodes).
        nodes: nodes of the run; more than one needs a SLURM allocation of that many nodes.
        cpus: CPU cores per node, shared evenly by its processes (torch threads each).
    """

    processes: int = 1
    nodes: int = 1
    cpus: int = 1

    def __post_init__(self) -> None:
        for name in ("processes", "nodes", "cpus"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def world_size(self) -> int:
        """Processes over all nodes."""
        return self.processes * self.nodes

    @property
    def threads_per_process(self) -> int:
        """Torch CPU threads of each process: its share of the node's cores, at least one."""
        return max(1, self.cpus // self.processes)


@dataclass(frozen=True)
class Rendezvous:
    """Where the torchrun agents of a multi-node run meet (c10d): ``host:port`` of the first node, and the run's id."""

    host: str
    port: int
    run_id: str


def _free_port() -> int:
    # The first node hosts the rendezvous store; the OS picks a port that is free there now.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def worker_command(plan: LaunchPlan, pretrain_args: Sequence[str], rendezvous: Rendezvous | None = None, python: str = sys.executable) -> list[str]:
    """The command line that starts ``plan.world_size`` workers of ``python -m mass_core.pretrain <pretrain_args>``.

    Args:
        plan: processes per node and nodes (``plan.world_size > 1``).
        pretrain_args: arguments of ``python -m mass_core.pretrain``.
        rendezvous: where the nodes meet; required when ``plan.nodes > 1``.
        python: the interpreter that runs torchrun and the workers.

    Example:
        >>> " ".join(worker_command(LaunchPlan(processes=2), ["--method", "mim"], python="python"))
        'python -m torch.distributed.run --standalone --nnodes=1 --nproc-per-node=2 -m mass_core.pretrain --method mim'
    """
    if plan.world_size < 2:
        raise ValueError("a single process runs in the calling process, not under torchrun")
    worker = ["-m", "mass_core.pretrain", *pretrain_args]
    torchrun = [python, "-m", "torch.distributed.run"]
    if plan.nodes == 1:
        return [*torchrun, "--standalone", "--nnodes=1", f"--nproc-per-node={plan.processes}", *worker]
    if rendezvous is None:
        raise ValueError(f"a run on {plan.nodes} nodes needs a rendezvous host")
    # One srun task per node, each a torchrun agent starting that node's processes;
    # --kill-on-bad-exit stops every node when one fails instead of leaving them waiting.
    srun = ["srun", f"--nodes={plan.nodes}", f"--ntasks={plan.nodes}", "--ntasks-per-node=1", f"--cpus-per-task={plan.cpus}", "--kill-on-bad-exit=1"]
    return [*srun, *torchrun, f"--nnodes={plan.nodes}", f"--nproc-per-node={plan.processes}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={rendezvous.host}:{rendezvous.port}", f"--rdzv-id={rendezvous.run_id}", *worker]


def _pretrain_args(method: str, manifests: Sequence[PathLike], proposals_roots: Sequence[PathLike], out_dir: Path, settings_file: Path) -> list[str]:
    args = ["--method", method]
    for manifest, root in zip(manifests, proposals_roots, strict=True):
        args += ["--manifest", str(manifest), "--proposals", str(root)]
    # Workers exit 0 when they stop early too: torchrun turns any other status into its own failure.
    return [*args, "--out", str(out_dir), "--config", str(settings_file), "--resumable-status", "0"]


def launch_pretraining(
    method: str,
    manifests: Sequence[PathLike],
    proposals_roots: Sequence[PathLike],
    out_dir: PathLike,
    settings: Mapping[str, Any],
    plan: LaunchPlan,
) -> int:
    """Pretrain ``method`` as ``plan`` says and return the exit status (0, 75, or a failed worker's).

    Arguments as for :func:`~mass_core.pretrain.run.run_pretraining`; the
    workers' output goes to this process's ``sys.stderr`` (the rule's log).

    Raises:
        ValueError: ``plan.nodes > 1`` outside a SLURM allocation (no ``srun``).
    """
    if plan.world_size == 1:
        torch.set_num_threads(plan.threads_per_process)
        return run_pretraining(method, manifests, proposals_roots, out_dir, settings).exit_code
    manifests, proposals_roots = list(manifests), list(proposals_roots)
    rendezvous = None
    if plan.nodes > 1:
        if not os.environ.get("SLURM_JOB_ID"):
            raise ValueError(f"pretraining on {plan.nodes} nodes needs a SLURM allocation of them (pretrain.nodes; no SLURM_JOB_ID here)")
        rendezvous = Rendezvous(socket.gethostname(), _free_port(), f"mass-{os.environ['SLURM_JOB_ID']}-{secrets.token_hex(4)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings_file = write_json(out_dir / SETTINGS_FILE, {"pretrain": dict(settings)})
    command = worker_command(plan, _pretrain_args(method, manifests, proposals_roots, out_dir, settings_file), rendezvous)
    print(f"launch: {shlex.join(command)}", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(command, stdout=sys.stderr, stderr=sys.stderr, env={**os.environ, "OMP_NUM_THREADS": str(plan.threads_per_process)})
    finally:
        settings_file.unlink(missing_ok=True)
    if done.returncode != 0:
        return done.returncode
    return 0 if (out_dir / FINAL_FILE).exists() else EXIT_RESUMABLE
