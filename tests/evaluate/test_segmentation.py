from __future__ import annotations

import dataclasses

import pytest
import torch

from mass_core.evaluate.fewshot import load_incontext_segmenter, reference_tokens
from mass_core.evaluate.segmentation import SegmentationNet, build_class_prior_model, build_segmentation_model
from mass_core.models.encoder import EncoderConfig, ResidualEncoder
from mass_core.pretrain.checkpoint import save_encoder

from .conftest import TINY_ENCODER, TINY_INCONTEXT, save_mass_checkpoint, synthetic_case


@pytest.mark.parametrize("method", ["mass", "mim", "mim_hier"])
def test_pretrained_encoder_of_any_method_loads(tmp_path, method):
    torch.manual_seed(5)
    pretrained = ResidualEncoder(TINY_ENCODER)
    save_encoder(tmp_path / "encoder.pt", pretrained, method, step=10)
    model = build_segmentation_model(3, TINY_ENCODER, tmp_path / "encoder.pt", seed=0)
    for key, value in pretrained.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[key], value)
    assert model(torch.zeros(2, 1, 16, 16, 8)).shape == (2, 3, 16, 16, 8)


def test_ddp_prefixed_state_dict_loads(tmp_path):
    pretrained = ResidualEncoder(TINY_ENCODER)
    torch.save({f"module.{k}": v for k, v in pretrained.state_dict().items()}, tmp_path / "bare.pt")
    model = build_segmentation_model(3, TINY_ENCODER, tmp_path / "bare.pt", seed=0)
    torch.testing.assert_close(model.encoder.stem.conv.weight, pretrained.stem.conv.weight)


def test_same_seed_gives_every_method_the_same_decoder(tmp_path):
    save_encoder(tmp_path / "encoder.pt", ResidualEncoder(TINY_ENCODER), "mass", step=1)
    pretrained = build_segmentation_model(3, TINY_ENCODER, tmp_path / "encoder.pt", seed=3)
    scratch = build_segmentation_model(3, TINY_ENCODER, None, seed=3)
    for key, value in scratch.decoder.state_dict().items():
        torch.testing.assert_close(pretrained.decoder.state_dict()[key], value)
    assert not torch.equal(pretrained.encoder.stem.conv.weight, scratch.encoder.stem.conv.weight)


def test_encoder_of_another_shape_is_rejected(tmp_path):
    save_encoder(tmp_path / "encoder.pt", ResidualEncoder(EncoderConfig(channels=(4, 8))), "mim", step=1)
    with pytest.raises(ValueError, match="another shape"):
        build_segmentation_model(3, TINY_ENCODER, tmp_path / "encoder.pt", seed=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_outputs"):
        SegmentationNet(TINY_ENCODER, 1)
    with pytest.raises(ValueError, match="encoder_config"):
        build_segmentation_model(3, None, None, seed=0)


@pytest.mark.parametrize("prototypes", [False, True])
def test_class_priors_at_step_0_reproduce_the_incontext_predictions(tmp_path, prototypes):
    config = dataclasses.replace(TINY_INCONTEXT, prototypes=prototypes)
    checkpoint = save_mass_checkpoint(tmp_path / "final.pt", config=config)
    # Case 2 has class 1 only, case 3 both classes.
    references = {f"r{s}": synthetic_case(s) for s in (2, 3)}
    device = torch.device("cpu")
    net = build_class_prior_model(checkpoint, references, [1, 2], (16, 16, 16), device)

    incontext = load_incontext_segmenter(checkpoint)
    tokens = reference_tokens(incontext, references, {1: ["r2", "r3"], 2: ["r3"]}, (16, 16, 16), device)
    query = torch.from_numpy(synthetic_case(5)[0][:16, :16, :16].copy())[None, None]
    net.eval()
    with torch.no_grad():
        logits = net(query)
        expected = incontext.segment(query, tokens)
    assert logits.shape == (1, 3, 16, 16, 16)
    assert torch.equal(logits[:, 0], torch.zeros_like(logits[:, 0]))
    torch.testing.assert_close(logits[:, 1:], expected, rtol=1e-5, atol=1e-5)
    # Argmax over [0, logits] is the in-context threshold sigmoid > 0.5 wherever one class is predicted.
    single = (expected > 0).sum(1) <= 1
    thresholded = torch.where((expected > 0).any(1), expected.argmax(1) + 1, 0)
    assert torch.equal(logits.argmax(1)[single], thresholded[single])


def test_class_priors_are_trained(tmp_path):
    net = build_class_prior_model(save_mass_checkpoint(tmp_path / "final.pt"), {"r3": synthetic_case(3)}, [1, 2], (16, 16, 16),
                                  torch.device("cpu"))
    names = {name for name, p in net.named_parameters() if p.requires_grad}
    assert {"tokens.0", "tokens.1"} <= names and any(n.startswith("model.encoder.") for n in names)
    assert net.encoder is net.model.encoder


def test_a_class_without_training_example_starts_from_the_mean_prior(tmp_path):
    # Case 2 has no class 2: its prior is the only other prior, class 1's.
    net = build_class_prior_model(save_mass_checkpoint(tmp_path / "final.pt"), {"r2": synthetic_case(2)}, [1, 2], (16, 16, 16),
                                  torch.device("cpu"))
    torch.testing.assert_close(net.tokens[0][:, 1], net.tokens[0][:, 0])


def test_class_priors_without_any_example_name_the_manifest(tmp_path):
    with pytest.raises(ValueError) as caught:
        build_class_prior_model(save_mass_checkpoint(tmp_path / "final.pt"), {"r2": synthetic_case(2)}, [3, 4], (16, 16, 16),
                                torch.device("cpu"), source=tmp_path / "manifest.parquet")
    assert str(caught.value) == (f"{tmp_path / 'manifest.parquet'}: no training case contains any of the classes [3, 4]; "
                                 "MASS-FT has nothing to start its priors from")
