from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch.utils.data import default_collate

from mass_core.models.encoder import EncoderConfig
from mass_core.models.incontext import InContextConfig, InContextSegmenter
from mass_core.manifest import read_manifest
from mass_core.pretrain.augment import IntensityAugConfig, SpatialAugConfig
from mass_core.pretrain.checkpoint import load_checkpoint, load_encoder
from mass_core.pretrain.mass import MassConfig, MassTask, StoreCase
from mass_core.pretrain.run import run_pretraining, training_cases
from mass_core.pretrain.sampler import SamplerConfig
from mass_core.pretrain.synthetic import synthetic_case, write_synthetic_dataset
from mass_core.pretrain.trainer import TrainConfig, train

from phantom_data import phantom_with_proposals
from replicas import assert_weights_close, gradient_free

REPO = Path(__file__).resolve().parents[2]
NO_AUGMENTATION = {
    "reference_intensity": IntensityAugConfig(probability=0),
    "query_intensity": IntensityAugConfig(probability=0),
    "query_spatial": SpatialAugConfig(probability=0),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), n_cases=4, shape=(24, 24, 24))


def test_batch_and_loss(tiny_cases, tiny_mass_config):
    task = MassTask(tiny_cases, tiny_mass_config)
    batch = task.make_batch(default_collate([task.sample(0, 0, i) for i in range(2)]), torch.device("cpu"))
    assert batch.query.shape == batch.reference.shape == (2, 1, 16, 16, 16)
    assert batch.reference_masks.shape == batch.targets.shape == (2, 3, 16, 16, 16)
    assert batch.valid.dtype == torch.bool
    # The all-ones target follows the query's affine: kept at the centre, cut where the view left the crop.
    assert bool((batch.targets[:, 0, 8, 8, 8] == 1).all()) and batch.targets[:, 0].mean() < 1
    losses = task.compute_loss(task.build_model(), batch)
    assert set(losses) == {"loss", "tversky", "bce", "present_fraction"} and torch.isfinite(losses["loss"])


def test_crop_must_suit_the_encoder(tiny_sections):
    with pytest.raises(ValueError, match="crop_size"):
        MassConfig(InContextConfig(EncoderConfig(channels=(4, 8, 16, 32))), SamplerConfig(crop_size=(16, 16, 20)))
    with pytest.raises(ValueError, match="unknown"):
        MassConfig.from_config({}, {"decoder": {}})
    config = MassConfig.from_config(tiny_sections["encoder"], tiny_sections["mass"])
    assert config.model.encoder.channels == (4, 8, 16) and config.sampler.crop_size == (16, 16, 16)


def test_store_cases_sample_like_arrays_in_memory(dataset):
    cases = training_cases(dataset.manifest, dataset.proposals_root)
    assert cases["case_id"].tolist() == ["case_000", "case_001", "case_002"]  # train split only
    config = SamplerConfig(crop_size=16, num_masks=4, min_mask_voxels=8)
    row = cases.iloc[1]
    from_store = MassTask([StoreCase(row.case_id, row.image, row.proposals)], MassConfig(sampler=config)).sample(0, 2, 1)
    in_memory = MassTask([synthetic_case(1, (24, 24, 24))], MassConfig(sampler=config)).sample(0, 2, 1)
    for key, value in in_memory.items():
        np.testing.assert_array_equal(from_store[key], value)


def test_run_pretraining_unknown_method(dataset, tmp_path):
    with pytest.raises(ValueError, match="method must be one of"):
        run_pretraining("simclr", dataset.manifest, dataset.proposals_root, tmp_path, {})
    with pytest.raises(ValueError, match="proposals_roots"):
        training_cases([dataset.manifest, dataset.manifest], dataset.proposals_root)


@pytest.mark.slow
def test_sigkill_then_rerun_ends_with_the_uninterrupted_weights(dataset, tmp_path, tiny_sections):
    config = {"pretrain": {"train": {"steps": 16, "batch_size": 2, "checkpoint_every": 4, "log_every": 4}, **tiny_sections}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))

    def command(out):
        args = ["--method", "mass", "--manifest", str(dataset.manifest), "--proposals", str(dataset.proposals_root)]
        return [sys.executable, "-m", "mass_core.pretrain", *args, "--out", str(out), "--config", str(tmp_path / "config.yaml")]

    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    straight = subprocess.run(command(tmp_path / "straight"), env=env, capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-2000:]

    victim = subprocess.Popen(command(tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (tmp_path / "killed" / "latest.pt").exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "final.pt").exists()
    killed_at = torch.load(tmp_path / "killed" / "latest.pt", weights_only=True)["step"]
    assert 4 <= killed_at < 16

    rerun = subprocess.run(command(tmp_path / "killed"), env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    a = torch.load(tmp_path / "straight" / "final.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "final.pt", weights_only=True)
    for part in ("model", "ema"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])
    assert torch.equal(load_encoder(tmp_path / "killed" / "encoder.pt").stem.conv.weight, b["ema"]["encoder.stem.conv.weight"])
    assert pd.read_csv(tmp_path / "killed" / "metrics.csv")["step"].tolist() == [4, 8, 12, 16]


def _incontext_dice(model: torch.nn.Module, batch) -> float:
    """Mean Dice of thresholded predictions over the masks present in the query."""
    model.eval()
    with torch.no_grad():
        predicted = (model(batch.query, batch.reference, batch.reference_masks) > 0).float()
    targets = batch.targets
    keep = batch.valid & (targets.sum((2, 3, 4)) > 0)
    dice = 2 * (predicted * targets).sum((2, 3, 4)) / (predicted.sum((2, 3, 4)) + targets.sum((2, 3, 4))).clamp_min(1)
    return dice[keep].mean().item()


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return phantom_with_proposals(tmp_path_factory.mktemp("phantom"))


@pytest.mark.slow
def test_pretraining_learns_in_context_segmentation_of_unseen_phantom_cases(phantom, tmp_path):
    model_config = InContextConfig(EncoderConfig(channels=(8, 16, 32)), token_scales=2, learned_tokens=2, heads=2)
    # Proposals covering >= 10 % of the crop: with every proposal of >= 8 voxels (most cover ~1.5 %),
    # 150 steps teach nothing (held-out Dice 0.02 -> 0.003); docs/pretraining.md has the measurements.
    sampler = {"crop_size": 16, "num_masks": 3, "min_mask_voxels": 400}
    cases = training_cases(phantom.manifest, phantom.proposals_root)
    task = MassTask([StoreCase(row.case_id, row.image, row.proposals) for row in cases.itertuples()], MassConfig(model_config, SamplerConfig(**sampler)))
    # Held out: the val and test cases (never seen in pretraining), no augmentation, proposals only (no all-ones mask).
    unseen = read_manifest(phantom.manifest).query("split != 'train'")
    held_out = MassTask([StoreCase(row.case_id, row.image, phantom.proposals_root / row.case_id) for row in unseen.itertuples()],
                        MassConfig(model_config, SamplerConfig(**sampler, full_mask=False, **NO_AUGMENTATION)))
    batch = held_out.make_batch(default_collate([held_out.sample(123, 0, i) for i in range(32)]), torch.device("cpu"))

    result = train(task, TrainConfig(steps=150, batch_size=2, lr=1e-2, checkpoint_every=1000, log_every=10), tmp_path)
    assert result.finished
    losses = pd.read_csv(tmp_path / "metrics.csv")["loss"].to_numpy()
    assert losses[-3:].mean() < losses[:2].mean() - 0.2

    torch.manual_seed(0)  # the trainer's initialisation: the same network before training
    untrained = InContextSegmenter(model_config)
    pretrained = InContextSegmenter(model_config)
    pretrained.load_state_dict(load_checkpoint(tmp_path / "final.pt", "mass").ema)
    before, after = _incontext_dice(untrained, batch), _incontext_dice(pretrained, batch)
    print(f"held-out in-context Dice: untrained {before:.3f}, EMA after 150 steps {after:.3f}")
    assert after > before + 0.15, (before, after)


@pytest.mark.slow
def test_ddp_with_two_processes_matches_one_process_with_the_same_global_batch(dataset, tmp_path, tiny_sections):
    steps = 8

    def run(out, launcher):
        train = {"steps": steps, "batch_size": 2, "checkpoint_every": steps, "log_every": 1, "device": "cpu"}
        (tmp_path / f"{out}.yaml").write_text(yaml.safe_dump({"pretrain": {"train": train, **tiny_sections}}))
        args = ["-m", "mass_core.pretrain", "--method", "mass", "--manifest", str(dataset.manifest), "--proposals", str(dataset.proposals_root)]
        command = [sys.executable, *launcher, *args, "--out", str(tmp_path / out), "--config", str(tmp_path / f"{out}.yaml")]
        done = subprocess.run(command, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return load_checkpoint(tmp_path / out / "final.pt", "mass"), pd.read_csv(tmp_path / out / "metrics.csv")

    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    (ddp, ddp_metrics), (single, single_metrics) = run("ddp", torchrun), run("single", [])
    # Each rank draws one of the single process's two tasks per step (by seed, step and global index);
    # where their numbers of present masks differ, only the global counts as denominators give the
    # single process's gradient (a per-rank mean: logged losses 8e-3 apart). Logged values are the global batch's.
    for key in ("loss", "tversky", "bce", "present_fraction"):
        np.testing.assert_allclose(ddp_metrics[key], single_metrics[key], rtol=0, atol=1e-5, err_msg=key)
    g = torch.Generator().manual_seed(0)
    query, reference = torch.randn(2, 2, 1, 16, 16, 16, generator=g)
    masks = (torch.rand(2, 3, 16, 16, 16, generator=g) > 0.7).float()
    nets = {}
    for name, checkpoint in (("ddp", ddp), ("single", single)):
        for weights in ("model", "ema"):
            nets[name, weights] = InContextSegmenter(InContextConfig.from_dict(checkpoint.model_config)).eval()
            nets[name, weights].load_state_dict(getattr(checkpoint, weights))
    # Weights with no exact gradient (biases a normalisation follows) drift apart; the outputs cover them.
    drifting = gradient_free(nets["single", "model"], query, reference, masks)
    assert any(key.startswith("encoder.") for key in drifting) and any(key.startswith("pixel_decoder.") for key in drifting)
    for weights in ("model", "ema"):
        assert_weights_close(getattr(ddp, weights), getattr(single, weights), 1e-5, weights, drifting)
        with torch.no_grad():
            outputs = [nets[name, weights](query, reference, masks) for name in ("ddp", "single")]
        # Outputs of size ~2 agree to ~1e-5 (a per-rank mean of the loss: ~1e-2 on the online weights).
        torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=5e-5)
