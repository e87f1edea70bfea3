"""Every method trains the same encoder: their encoder.pt files are interchangeable."""

from __future__ import annotations

import pytest
import torch

from mass_core.models.encoder import EncoderConfig
from mass_core.pretrain.checkpoint import load_encoder
from mass_core.pretrain.run import PRETEXT_TASKS, init_scratch, run_pretraining
from mass_core.pretrain.synthetic import write_synthetic_dataset

from tiny_models import TINY_ENCODER, TINY_MASS

SECTIONS = {
    "train": {"steps": 4, "batch_size": 2, "checkpoint_every": 2, "log_every": 2, "optimizer": "adamw"},
    "encoder": TINY_ENCODER,
    "mass": TINY_MASS,
    "mim": {"crop_size": [16, 16, 16]},
    "mim_hier": {"crop_size": [16, 16, 16]},
}


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    dataset = write_synthetic_dataset(root / "data", n_cases=4, shape=(24, 24, 24))
    paths = {"scratch": init_scratch(root / "scratch", SECTIONS)}
    for method in sorted(PRETEXT_TASKS):
        result = run_pretraining(method, dataset.manifest, dataset.proposals_root, root / method, SECTIONS)
        assert result.exit_code == 0
        paths[method] = root / method / "encoder.pt"
    return paths


def test_every_method_is_registered():
    assert set(PRETEXT_TASKS) == {"mass", "mim", "mim_hier"}


def test_encoders_of_all_methods_share_keys_and_shapes(encoders):
    expected = EncoderConfig(**TINY_ENCODER)
    states = {method: load_encoder(path, expected).state_dict() for method, path in encoders.items()}
    reference = states["scratch"]
    for method, state in states.items():
        assert list(state) == list(reference), method
        assert all(state[k].shape == reference[k].shape for k in reference), method
    # Pretraining changed the weights; scratch is the seeded initialisation.
    for method in PRETEXT_TASKS:
        assert any(not torch.equal(states[method][k], reference[k]) for k in reference), method


def test_scratch_is_seeded(tmp_path):
    a = load_encoder(init_scratch(tmp_path / "a", SECTIONS)).state_dict()
    b = load_encoder(init_scratch(tmp_path / "b", SECTIONS)).state_dict()
    c = load_encoder(init_scratch(tmp_path / "c", {**SECTIONS, "train": {**SECTIONS["train"], "seed": 1}})).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_mass_leaves_out_cases_without_proposals(tmp_path, capsys):
    import shutil

    from mass_core.pretrain.run import PRETEXT_TASKS, training_cases

    dataset = write_synthetic_dataset(tmp_path / "data", n_cases=4, shape=(24, 24, 24))
    cases = training_cases(dataset.manifest, dataset.proposals_root)
    skipped = cases["case_id"].iloc[0]
    shutil.rmtree(dataset.proposals_root / skipped)  # what propose leaves for a skipped case: no store
    task = PRETEXT_TASKS["mass"].build(cases, SECTIONS, [(dataset.manifest, dataset.proposals_root)])
    assert len(task.sampler.cases) == len(cases) - 1
    assert f"left out: {skipped}" in capsys.readouterr().err
