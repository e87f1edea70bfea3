"""The command lines that start a pretraining run on several processes or nodes."""

from __future__ import annotations

import pytest

from mass_core.pretrain.launch import LaunchPlan, Rendezvous, worker_command
from mass_core.pretrain.trainer import rank_batch

ARGS = ["--method", "mass", "--manifest", "m.parquet", "--proposals", "p", "--out", "out", "--config", "s.json", "--resumable-status", "0"]
WORKER = ["-m", "mass_core.pretrain", *ARGS]


def test_one_node_runs_torchrun_standalone():
    assert worker_command(LaunchPlan(processes=4, cpus=16), ARGS, python="py") == [
        "py", "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc-per-node=4", *WORKER]


def test_several_nodes_run_one_torchrun_per_node_under_srun_meeting_on_the_first():
    command = worker_command(LaunchPlan(processes=4, nodes=2, cpus=32), ARGS, Rendezvous("gpu017", 41234, "mass-99-ab12"), python="py")
    assert command == [
        "srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--cpus-per-task=32", "--kill-on-bad-exit=1",
        "py", "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=4", "--rdzv-backend=c10d",
        "--rdzv-endpoint=gpu017:41234", "--rdzv-id=mass-99-ab12", *WORKER]


def test_one_process_has_no_command_and_several_nodes_need_a_rendezvous():
    with pytest.raises(ValueError, match="single process"):
        worker_command(LaunchPlan(), ARGS)
    with pytest.raises(ValueError, match="rendezvous"):
        worker_command(LaunchPlan(processes=1, nodes=2), ARGS)
    with pytest.raises(ValueError, match="processes"):
        LaunchPlan(processes=0)


@pytest.mark.parametrize("plan, world, threads", [(LaunchPlan(), 1, 1), (LaunchPlan(processes=4, cpus=8), 4, 2),
                                                  (LaunchPlan(processes=4, nodes=2, cpus=2), 8, 1)])
def test_processes_share_the_cores_of_their_node(plan, world, threads):
    assert (plan.world_size, plan.threads_per_process) == (world, threads)


def test_the_global_batch_is_split_evenly():
    assert [rank_batch(8, n) for n in (1, 2, 4, 8)] == [8, 4, 2, 1]
    with pytest.raises(ValueError, match=r"batch_size \(6\) is the global batch and must be a multiple of the number of processes \(4\)"):
        rank_batch(6, 4)
