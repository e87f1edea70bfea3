"""Every method trains the same encoder: their encoder.pt files are interchangeable."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import mass_core.pretrain.run as run_module
from mass_core.models.encoder import EncoderConfig
from mass_core.pretrain.checkpoint import load_encoder
from mass_core.pretrain.run import PRETEXT_TASKS, check_method_names, init_scratch, load_method_modules, register, run_pretraining
from mass_core.pretrain.synthetic import write_synthetic_dataset

import toy_pretext
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


@pytest.fixture
def registry(monkeypatch):
    """PRETEXT_TASKS as a copy, so that registering in a test leaves the real registry alone."""
    copy = dict(run_module.PRETEXT_TASKS)
    monkeypatch.setattr(run_module, "PRETEXT_TASKS", copy)
    return copy


def test_a_task_from_method_modules_trains_and_writes_an_evaluation_encoder(tmp_path, registry):
    dataset = write_synthetic_dataset(tmp_path / "data", n_cases=2, shape=(24, 24, 24))
    sections = {"train": SECTIONS["train"], "encoder": TINY_ENCODER, "method_modules": ["toy_pretext"]}
    result = run_pretraining("rotation", dataset.manifest, dataset.proposals_root, tmp_path / "rotation", sections)
    assert result.exit_code == 0 and registry["rotation"].build is toy_pretext.PRETEXT_METHODS[0].build
    # What finetuning and the probe load: the shared encoder, trained away from its seeded initialisation.
    trained = load_encoder(tmp_path / "rotation" / "encoder.pt", EncoderConfig(**TINY_ENCODER)).state_dict()
    initial = load_encoder(init_scratch(tmp_path / "scratch", sections), EncoderConfig(**TINY_ENCODER)).state_dict()
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)


def test_method_names_are_checked_against_the_registry(registry):
    check_method_names(["scratch", "mass", "mim", "mim_hier"])
    with pytest.raises(ValueError, match=r"pretrain.methods\[1\]: 'rotation' is not one of \['mass', 'mim', 'mim_hier', 'scratch'\]"):
        check_method_names(["scratch", "rotation"])
    load_method_modules(["toy_pretext"])
    load_method_modules(["toy_pretext"])  # the workflow and the job may both load it
    check_method_names(["scratch", "rotation"])


@pytest.mark.parametrize("module, message", [
    ("no_such_module", "cannot import 'no_such_module'"),
    ("tiny_models", "module 'tiny_models' defines no PRETEXT_METHODS list"),
])
def test_bad_method_modules_are_named(registry, module, message):
    with pytest.raises(ValueError, match=message):
        load_method_modules([module])


def test_a_registered_name_cannot_be_taken_again(registry):
    with pytest.raises(ValueError, match="'mim' is already registered"):
        register(dataclasses.replace(registry["mim"], in_context=True))
    with pytest.raises(ValueError, match="'scratch' is already registered"):
        register(dataclasses.replace(registry["mim"], name="scratch"))


@pytest.mark.parametrize("ways, rows", [
    (["whole"], {"scratch": ("scratch", False), "mim": ("mim", False), "mass": ("mass", True)}),
    (["whole", "encoder"], {"scratch": ("scratch", False), "mim": ("mim", False), "mass": ("mass", True),
                            "mass_encoder": ("mass", False)}),
    (["encoder"], {"scratch": ("scratch", False), "mim": ("mim", False), "mass_encoder": ("mass", False)}),
])
def test_finetune_rows_follow_the_registry_and_mass_finetune(ways, rows):
    from mass_core.pretrain.run import finetune_rows

    result = finetune_rows(["scratch", "mim", "mass"], ways)
    assert result == rows and list(result) == list(rows)


def test_dataset_weights_reach_the_mass_draw_case_by_case(tmp_path):
    from mass_core.pretrain.run import PRETEXT_TASKS, training_cases

    first = write_synthetic_dataset(tmp_path / "a", n_cases=4, shape=(24, 24, 24))
    second = write_synthetic_dataset(tmp_path / "b", n_cases=4, shape=(24, 24, 24))
    manifests, roots = [first.manifest, second.manifest], [first.proposals_root, second.proposals_root]
    cases = training_cases(manifests, roots, [6, 0.5])
    n_first = int((cases["proposals"].str.startswith(str(first.proposals_root))).sum())
    assert cases["weight"].tolist() == [6.0] * n_first + [0.5] * (len(cases) - n_first)
    task = PRETEXT_TASKS["mass"].build(cases, SECTIONS, list(zip(manifests, roots)))
    probabilities = np.diff(task.sampler.draw_case.cumulative, prepend=0.0)
    np.testing.assert_allclose(probabilities, cases["weight"] / cases["weight"].sum())
    with pytest.raises(ValueError, match="dataset_weights"):
        training_cases(manifests, roots, [1.0])
