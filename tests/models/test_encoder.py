from __future__ import annotations

import pytest
import torch

from mass_core.models.encoder import EncoderConfig, ResidualEncoder

torch.set_num_threads(1)


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        ({"channels": (4, 8), "blocks_per_stage": 1}, (2, 1, 8, 8, 8)),
        ({"channels": (4, 8, 16), "blocks_per_stage": (1, 2, 1)}, (1, 1, 16, 8, 24)),
        ({"channels": (2, 4, 4, 8), "blocks_per_stage": 1, "in_channels": 2}, (1, 2, 16, 16, 8)),
    ],
)
def test_feature_shapes(kwargs, shape):
    config = EncoderConfig(**kwargs)
    features = ResidualEncoder(config)(torch.randn(shape))
    assert [tuple(f.shape) for f in features] == [
        (shape[0], c, *(n // 2**s for n in shape[2:])) for s, c in enumerate(config.channels)
    ]


def test_state_dict_keys_are_the_documented_ones():
    keys = set(ResidualEncoder(EncoderConfig(channels=(2, 4), blocks_per_stage=(1, 2))).state_dict())
    block = ["norm1.weight", "norm1.bias", "conv1.conv.weight", "conv1.conv.bias", "norm2.weight", "norm2.bias", "conv2.conv.weight", "conv2.conv.bias"]
    expected = {"stem.conv.weight", "stem.conv.bias"}
    expected |= {f"stages.0.0.{k}" for k in block}
    expected |= {f"stages.1.{b}.{k}" for b in (0, 1) for k in block}
    expected |= {"stages.1.0.shortcut.conv.weight", "stages.1.0.shortcut.conv.bias"}
    assert keys == expected


def test_config_round_trip_normalises_lists():
    config = EncoderConfig(channels=[4, 8], blocks_per_stage=2)
    assert config.blocks_per_stage == (2, 2)
    assert EncoderConfig.from_dict(config.to_dict()) == config
    assert config.to_dict() == {"channels": [4, 8], "blocks_per_stage": [2, 2], "in_channels": 1}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"channels": ()}, "channels"),
        ({"channels": (4, 0)}, "channels"),
        ({"channels": (4, 8), "blocks_per_stage": (1,)}, "blocks_per_stage"),
        ({"channels": (4, 8), "blocks_per_stage": 0}, "blocks_per_stage"),
        ({"in_channels": 0}, "in_channels"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EncoderConfig(**kwargs)


def test_input_size_must_suit_the_downsampling():
    encoder = ResidualEncoder(EncoderConfig(channels=(2, 4, 4)))
    with pytest.raises(ValueError, match="multiple of 4"):
        encoder(torch.zeros(1, 1, 8, 8, 6))
    with pytest.raises(ValueError, match=r"\(B, 1, X, Y, Z\)"):
        encoder(torch.zeros(1, 2, 8, 8, 8))
    with pytest.raises(ValueError, match="from_dict|unknown"):
        EncoderConfig.from_dict({"channels": [2], "width": 3})
