from __future__ import annotations

import pytest
import torch

from mass_core.models.encoder import EncoderConfig
from mass_core.models.reconstruction import ReconstructionConfig, ReconstructionNet


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _net(learned: bool = True) -> ReconstructionNet:
    torch.manual_seed(0)
    return ReconstructionNet(ReconstructionConfig(EncoderConfig(channels=(4, 8, 16)), learned)).eval()


@pytest.mark.parametrize("size", [(16, 16, 16), (24, 16, 32)])
def test_reconstruction_has_input_size(size):
    out = _net()(torch.randn(2, 1, *size), torch.zeros(2, 1, *size, dtype=torch.bool))
    assert out.reconstruction.shape == (2, 1, *size)
    assert out.deepest.shape == (2, 16, *(s // 4 for s in size))


def test_hidden_voxels_cannot_leak_into_the_prediction():
    net = _net()
    image = torch.randn(1, 1, 16, 16, 16)
    mask = torch.zeros(1, 1, 16, 16, 16, dtype=torch.bool)
    mask[..., 4:12, 4:12, 4:12] = True
    changed = image.clone()
    changed[mask] = torch.randn(int(mask.sum())) * 10
    with torch.no_grad():
        assert torch.equal(net(image, mask).reconstruction, net(changed, mask).reconstruction)
        assert not torch.equal(net(image, ~mask).reconstruction, net(changed, ~mask).reconstruction)


def test_mask_token_is_learned_only_when_configured():
    assert _net(True).mask_token.requires_grad and not _net(False).mask_token.requires_grad


def test_mask_shape_is_checked():
    with pytest.raises(ValueError, match="mask must have shape"):
        _net()(torch.randn(1, 1, 16, 16, 16), torch.zeros(1, 2, 16, 16, 16))
