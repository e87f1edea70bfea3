"""The command lines that start a pretraining run on several processes or nodes."""

from __future__ import annotations

import sys

import pytest
import torch

from mass_core.pretrain.checkpoint import load_checkpoint
from mass_core.pretrain.launch import SETTINGS_FILE, LaunchPlan, Rendezvous, launch_pretraining, worker_command
from mass_core.pretrain.synthetic import write_synthetic_dataset
from mass_core.pretrain.trainer import EXIT_RESUMABLE, FINAL_FILE, LATEST_FILE, rank_batch

from tiny_models import TINY_ENCODER

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


@pytest.mark.slow
def test_two_processes_stop_with_75_and_the_resubmitted_run_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    data = write_synthetic_dataset(tmp_path / "data", n_cases=3, shape=(24, 24, 24))
    train = {"steps": 4, "batch_size": 2, "checkpoint_every": 2, "log_every": 1, "device": "cpu"}
    settings = {"train": train, "encoder": TINY_ENCODER, "mim": {"crop_size": [16, 16, 16]}}
    plan = LaunchPlan(processes=2, cpus=2)
    log = tmp_path / "pretrain.log"
    # As in the rule's script, the workers' output goes to sys.stderr, the rule's log.
    monkeypatch.setattr(sys, "stderr", log.open("a"))

    def launch(out: str, max_wall_seconds: float | None) -> int:
        run = {**settings, "train": {**train, "max_wall_seconds": max_wall_seconds}}
        return launch_pretraining("mim", [data.manifest], [data.proposals_root], tmp_path / out, run, plan)

    assert launch("whole", None) == 0
    # A budget that one step already exceeds: every rank stops after its first step and rank 0 writes latest.pt.
    assert launch("resumed", 1e-3) == EXIT_RESUMABLE
    assert (tmp_path / "resumed" / LATEST_FILE).is_file() and not (tmp_path / "resumed" / FINAL_FILE).exists()
    assert 0 < load_checkpoint(tmp_path / "resumed" / LATEST_FILE, "mim").step < train["steps"]
    assert launch("resumed", None) == 0
    assert not (tmp_path / "resumed" / LATEST_FILE).exists() and not (tmp_path / "resumed" / SETTINGS_FILE).exists()
    whole, resumed = load_checkpoint(tmp_path / "whole" / FINAL_FILE, "mim"), load_checkpoint(tmp_path / "resumed" / FINAL_FILE, "mim")
    # Same processes, same reductions: resuming changes nothing, bit for bit.
    for weights in ("model", "ema"):
        for key, value in getattr(whole, weights).items():
            assert torch.equal(value, getattr(resumed, weights)[key]), f"{weights}: {key}"
    assert "--nproc-per-node=2" in log.read_text()
