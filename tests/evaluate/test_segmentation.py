from __future__ import annotations

import pytest
import torch

from mass_core.evaluate.segmentation import SegmentationNet, build_segmentation_model
from mass_core.models.encoder import EncoderConfig, ResidualEncoder
from mass_core.pretrain.checkpoint import save_encoder

from .conftest import TINY_ENCODER


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
