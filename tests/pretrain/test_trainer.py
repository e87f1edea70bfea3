from __future__ import annotations

import os
import signal

import pandas as pd
import pytest
import torch

from mass_core.pretrain.curves import plot_training_curves, training_curves_figure
from mass_core.pretrain.data import StepSampler
from mass_core.pretrain.mass import MassTask
from mass_core.pretrain.checkpoint import load_checkpoint
from mass_core.pretrain.trainer import EXIT_RESUMABLE, TrainConfig, snapshot_path, train

SHORT = TrainConfig(steps=6, batch_size=2, lr=5e-3, checkpoint_every=2, log_every=2)


def _weights(path):
    state = torch.load(path, weights_only=True)
    return {**{f"model.{k}": v for k, v in state["model"].items()}, **{f"ema.{k}": v for k, v in state["ema"].items()}}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]


def test_run_writes_checkpoints_metrics_and_an_encoder(tmp_path, tiny_cases, tiny_mass_config):
    result = train(MassTask(tiny_cases, tiny_mass_config), SHORT, tmp_path)
    assert result.finished and result.exit_code == 0 and result.step == 6
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["encoder.pt", "final.pt", "metrics.csv"]
    final = torch.load(tmp_path / "final.pt", weights_only=True)
    assert final["method"] == "mass" and final["step"] == 6 and final["ema_updates"] == 6
    encoder = torch.load(tmp_path / "encoder.pt", weights_only=True)["state_dict"]
    assert encoder.keys() == {k.removeprefix("encoder.") for k in final["ema"] if k.startswith("encoder.")}
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics["step"].tolist() == [2, 4, 6]
    assert {"loss", "tversky", "bce", "present_fraction", "grad_norm", "lr", "samples_per_s", "data_fraction"} <= set(metrics.columns)
    # A finished run is not trained again.
    stamp = os.stat(tmp_path / "final.pt").st_mtime_ns
    again = train(MassTask(tiny_cases, tiny_mass_config), SHORT, tmp_path)
    assert again.finished and os.stat(tmp_path / "final.pt").st_mtime_ns == stamp


def test_wall_clock_stop_then_resume_gives_the_uninterrupted_weights(tmp_path, tiny_cases, tiny_mass_config):
    task = MassTask(tiny_cases, tiny_mass_config)
    train(task, SHORT, tmp_path / "straight")
    # A budget too small for more than one step: the run stops cleanly after it.
    stopped = train(task, TrainConfig(**{**SHORT.__dict__, "max_wall_seconds": 1e-3}), tmp_path / "split")
    assert not stopped.finished and stopped.exit_code == EXIT_RESUMABLE and stopped.step == 1
    assert (tmp_path / "split" / "latest.pt").exists() and not (tmp_path / "split" / "final.pt").exists()
    assert torch.load(tmp_path / "split" / "latest.pt", weights_only=True)["step"] == 1
    # The rerun (another budget, other bookkeeping) continues to the same weights.
    resumed = train(task, TrainConfig(**{**SHORT.__dict__, "checkpoint_every": 5}), tmp_path / "split")
    assert resumed.finished and not (tmp_path / "split" / "latest.pt").exists()
    _assert_same(_weights(tmp_path / "straight" / "final.pt"), _weights(tmp_path / "split" / "final.pt"))
    assert pd.read_csv(tmp_path / "split" / "metrics.csv")["step"].tolist() == [2, 4, 6]


class _SignalledTask(MassTask):
    """Sends SIGTERM to its own process during step 3, like a scheduler's time limit."""

    calls = 0

    def compute_loss(self, model, batch):
        type(self).calls += 1
        if type(self).calls == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().compute_loss(model, batch)


def test_sigterm_stops_cleanly_with_a_checkpoint(tmp_path, tiny_cases, tiny_mass_config):
    before = signal.getsignal(signal.SIGTERM)
    result = train(_SignalledTask(tiny_cases, tiny_mass_config), SHORT, tmp_path)
    assert not result.finished and result.step == 3 and result.exit_code == EXIT_RESUMABLE
    assert torch.load(tmp_path / "latest.pt", weights_only=True)["step"] == 3
    assert signal.getsignal(signal.SIGTERM) == before
    # Snakemake deletes the outputs of a failed attempt; the history lives on in latest.pt.
    (tmp_path / "metrics.csv").unlink()
    assert train(MassTask(tiny_cases, tiny_mass_config), SHORT, tmp_path).finished
    assert pd.read_csv(tmp_path / "metrics.csv")["step"].tolist() == [2, 4, 6]
    (tmp_path / "metrics.csv").unlink()
    train(MassTask(tiny_cases, tiny_mass_config), SHORT, tmp_path)
    assert pd.read_csv(tmp_path / "metrics.csv")["step"].tolist() == [2, 4, 6]


def test_resume_refuses_other_settings_or_methods(tmp_path, tiny_cases, tiny_mass_config):
    task = MassTask(tiny_cases, tiny_mass_config)
    train(task, TrainConfig(**{**SHORT.__dict__, "max_wall_seconds": 1e-3}), tmp_path)
    with pytest.raises(ValueError, match=r"other training settings \(lr: 0.005 -> 0.001\)"):
        train(task, TrainConfig(**{**SHORT.__dict__, "lr": 1e-3}), tmp_path)

    class OtherMethod(MassTask):
        method = "mim"

    with pytest.raises(ValueError, match="written by pretext task 'mass', not 'mim'"):
        train(OtherMethod(tiny_cases, tiny_mass_config), SHORT, tmp_path)


def test_ranks_split_each_step_like_one_big_batch():
    single = list(StepSampler(3, 5, batch_size=4))
    ranks = [list(StepSampler(3, 5, batch_size=2, rank=r, world_size=2)) for r in range(2)]
    assert single == list(range(12, 20))
    assert sorted(ranks[0] + ranks[1]) == single
    assert ranks[0][:2] == [12, 13] and ranks[1][:2] == [14, 15]
    with pytest.raises(ValueError, match="rank"):
        StepSampler(0, 1, 1, rank=2, world_size=2)


@pytest.mark.parametrize("kwargs, message", [({"steps": 0}, "steps"), ({"batch_size": 0}, "batch_size"), ({"max_wall_seconds": 0}, "max_wall_seconds")])
def test_bad_train_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"epochs": 3})


def test_loader_workers_do_not_change_the_result(tmp_path, tiny_cases, tiny_mass_config):
    task = MassTask(tiny_cases, tiny_mass_config)
    short = TrainConfig(**{**SHORT.__dict__, "steps": 4})
    train(task, short, tmp_path / "main")
    train(task, TrainConfig(**{**short.__dict__, "num_workers": 2}), tmp_path / "workers")
    _assert_same(_weights(tmp_path / "main" / "final.pt"), _weights(tmp_path / "workers" / "final.pt"))


class _CountingTask(MassTask):
    """MASS with a held-out "score" that reveals which weights it was given."""

    def validate(self, model, device, step):
        return {"val_weight_sum": float(sum(p.detach().sum() for p in model.parameters()))}


def test_validation_rows_and_snapshots_survive_a_resume(tmp_path, tiny_cases, tiny_mass_config):
    config = TrainConfig(steps=6, batch_size=2, lr=5e-3, checkpoint_every=2, log_every=2, validate_every=2, snapshot_steps=(2, 4))
    stopped = TrainConfig(**{**config.__dict__, "max_wall_seconds": 1e-3})
    assert not train(_CountingTask(tiny_cases, tiny_mass_config), stopped, tmp_path / "resumed").finished
    train(_CountingTask(tiny_cases, tiny_mass_config), config, tmp_path / "resumed")
    train(_CountingTask(tiny_cases, tiny_mass_config), config, tmp_path / "straight")
    rows = {name: pd.read_csv(tmp_path / name / "validation.csv") for name in ("resumed", "straight")}
    # Step 0 (before training), then every 2 steps; the EMA weights move, so the score does.
    assert rows["straight"]["step"].tolist() == [0, 2, 4, 6]
    assert rows["straight"]["val_weight_sum"].nunique() == 4
    pd.testing.assert_series_equal(rows["resumed"]["val_weight_sum"], rows["straight"]["val_weight_sum"])
    assert [row["step"] for row in torch.load(tmp_path / "straight" / "final.pt", weights_only=True)["validation"]] == [0, 2, 4, 6]
    for step in (2, 4):
        snapshot = torch.load(snapshot_path(tmp_path / "straight", step), weights_only=True)
        assert snapshot["step"] == step and snapshot["method"] == "mass"
    _assert_same(_weights(snapshot_path(tmp_path / "straight", 4)), _weights(snapshot_path(tmp_path / "resumed", 4)))
    # The checks and snapshots leave training alone: the same weights as a run without them.
    plain = TrainConfig(steps=6, batch_size=2, lr=5e-3, checkpoint_every=2, log_every=2)
    train(_CountingTask(tiny_cases, tiny_mass_config), plain, tmp_path / "plain")
    _assert_same(_weights(tmp_path / "plain" / "final.pt"), _weights(tmp_path / "straight" / "final.pt"))


def test_snapshot_steps_must_lie_inside_the_run():
    with pytest.raises(ValueError, match="snapshot_steps"):
        TrainConfig(steps=6, snapshot_steps=(6,))


class _ImprovingTask(MassTask):
    """Reports a held-out Dice that rises by 0.1 per check."""

    calls = 0

    def validate(self, model, device, step):
        self.calls += 1
        return {"val_incontext_dice": 0.1 * self.calls}


def test_training_curves_show_the_held_out_check(tmp_path, tiny_cases, tiny_mass_config):
    config = TrainConfig(steps=4, batch_size=2, lr=5e-3, checkpoint_every=2, log_every=2, validate_every=2)
    train(_ImprovingTask(tiny_cases, tiny_mass_config), config, tmp_path / "with")
    train(MassTask(tiny_cases, tiny_mass_config), TrainConfig(steps=4, batch_size=2, checkpoint_every=2, log_every=2), tmp_path / "without")
    assert len(training_curves_figure(tmp_path / "without", "mass").axes) == 1
    loss, check = training_curves_figure(tmp_path / "with", "mass").axes
    metrics, validation = pd.read_csv(tmp_path / "with" / "metrics.csv"), pd.read_csv(tmp_path / "with" / "validation.csv")
    plotted = {line.get_label(): line for line in loss.lines}
    assert list(plotted["loss"].get_ydata()) == metrics["loss"].tolist()
    assert list(check.lines[0].get_xdata()) == [0, 2, 4]
    assert check.lines[0].get_ydata() == pytest.approx([10.0, 20.0, 30.0])
    plot_training_curves(tmp_path / "with", tmp_path / "curves.png", "mass")
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_a_task_without_a_check_writes_no_validation_file(tmp_path, tiny_cases, tiny_mass_config):
    config = TrainConfig(steps=4, batch_size=2, checkpoint_every=2, log_every=2, validate_every=2)
    train(MassTask(tiny_cases, tiny_mass_config), config, tmp_path)
    assert not (tmp_path / "validation.csv").exists()


def test_checkpoints_carry_the_standardization_and_crop_they_were_trained_with(tmp_path, tiny_cases, tiny_mass_config):
    records = [{"modality": "CT", "params": {"spacing_mm": [2.5, 2.5, 2.5], "ct_clip_hu": [-991.0, 500.0], "roi": "body"}, "cases": 3},
               {"modality": "MR", "params": {"spacing_mm": [1.5, 1.5, 1.5], "percentiles": [1.0, 99.0]}, "cases": 1}]
    config = TrainConfig(steps=4, batch_size=2, checkpoint_every=2, log_every=2, max_wall_seconds=0.001)
    # Stops early (latest.pt), then resumes to final.pt: both files carry the records, read back equal.
    assert train(MassTask(tiny_cases, tiny_mass_config), config, tmp_path, records).exit_code == EXIT_RESUMABLE
    assert load_checkpoint(tmp_path / "latest.pt").standardization == records
    # The sampler's crop (tiny_mass_config: 16), what infer defaults --crop and --roi to.
    assert load_checkpoint(tmp_path / "latest.pt").crop_size == [16, 16, 16] == list(tiny_mass_config.sampler.crop_size)
    config = TrainConfig(steps=4, batch_size=2, checkpoint_every=2, log_every=2)
    assert train(MassTask(tiny_cases, tiny_mass_config), config, tmp_path, records).finished
    final = load_checkpoint(tmp_path / "final.pt")
    assert final.standardization == records and final.crop_size == [16, 16, 16]
