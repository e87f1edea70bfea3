"""The faster CPU formulation of the MASS step against the plain one it replaces.

The reference below is the model as first written: every convolution in the
default layout, ``F.instance_norm``, each mask decoder block applied to
``cat([up, skip repeated K times])`` and attention through
``nn.MultiheadAttention``. The model now computes the skip's share once per
image, runs large few-channel convolutions channels-last, normalises with
GroupNorm kernels and applies the attention weights to strided heads; logits, losses,
gradients and the weights after a few training steps must agree to float32
tolerance. The sizes (8 channels at 32^3) are the smallest that take the
channels-last path.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mass_core.models import encoder as encoder_module
from mass_core.models import incontext as incontext_module
from mass_core.models.encoder import EncoderConfig, InstanceNorm, PreActResBlock, conv_channels_last
from mass_core.models.incontext import InContextConfig, InContextSegmenter
from mass_core.models.reconstruction import ReconstructionConfig, ReconstructionNet
from mass_core.pretrain.losses import mass_loss

CONFIG = InContextConfig(EncoderConfig(channels=(8, 16, 32)), token_scales=2, learned_tokens=2, heads=4, prototypes=True)


def _plain_block(block: PreActResBlock, x: torch.Tensor) -> torch.Tensor:
    pre = block.act(block.norm1(x))
    skip = x if block.shortcut is None else block.shortcut(pre)
    return skip + block.conv2(block.act(block.norm2(block.conv1(pre))))


def _plain_shared(block: PreActResBlock, x: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
    return _plain_block(block, torch.cat([x, shared.repeat_interleave(len(x) // len(shared), dim=0)], dim=1))


def _plain_attend(attention: nn.MultiheadAttention, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    return attention(x, context, context, need_weights=False)[0]


@pytest.fixture
def plain(monkeypatch):
    """Switch the model to the reference formulation for the duration of a ``with``-less call: ``plain(fn)()``."""

    def run(fn):
        def wrapped(*args, **kwargs):
            with monkeypatch.context() as m:
                m.setattr(encoder_module, "conv_channels_last", lambda conv, x: conv(x))
                m.setattr(encoder_module, "instance_norm", lambda x, weight, bias, eps: F.instance_norm(x, weight=weight, bias=bias, eps=eps))
                m.setattr(PreActResBlock, "forward", _plain_block)
                m.setattr(PreActResBlock, "forward_shared", _plain_shared)
                m.setattr(incontext_module, "_attend", _plain_attend)
                return fn(*args, **kwargs)

        return wrapped

    return run


def _assert_grads_close(actual: list[torch.Tensor], expected: list[torch.Tensor], tolerance: float = 1e-4) -> None:
    """Every difference within ``tolerance`` of the largest gradient magnitude of its tensor or of the whole list.

    Gradients of weights are sums over ~10^5 voxels: float32 summation order
    moves them by up to ~1e-5 of their scale, which an elementwise relative
    tolerance would flag wherever a sum happens to be near 0 (the bias of a
    convolution followed by InstanceNorm has a gradient of exactly 0 plus
    that noise).
    """
    overall = max(float(e.abs().max()) for e in expected)
    for a, e in zip(actual, expected, strict=True):
        difference = float((a - e).abs().max())
        assert difference <= tolerance * overall, f"max difference {difference:.3g} against gradient scale {overall:.3g}"


def _inputs(b: int = 2, k: int = 3, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(b, 1, size, size, size, generator=g)
    reference = torch.randn(b, 1, size, size, size, generator=g)
    masks = (torch.rand(b, k, size, size, size, generator=g) > 0.6).float()
    targets = (torch.rand(b, k, size, size, size, generator=g) > 0.6).float()
    return query, reference, masks, targets


def test_channels_last_convolution_matches_and_keeps_the_layout():
    torch.manual_seed(0)
    conv = nn.Conv3d(8, 8, 3, padding=1)
    x = torch.randn(2, 8, 32, 32, 32, requires_grad=True)
    fast = conv_channels_last(conv, x)
    assert fast.is_contiguous()
    torch.testing.assert_close(fast, conv(x), atol=1e-5, rtol=1e-5)
    grads_fast = torch.autograd.grad(fast.square().sum(), [x, *conv.parameters()])
    grads_plain = torch.autograd.grad(conv(x).square().sum(), [x, *conv.parameters()])
    _assert_grads_close(grads_fast, grads_plain)


def test_instance_norm_matches_torch_instance_norm():
    torch.manual_seed(0)
    fast, plain = InstanceNorm(6), nn.InstanceNorm3d(6, affine=True)
    with torch.no_grad():
        fast.weight.uniform_(0.5, 1.5)
        fast.bias.uniform_(-0.5, 0.5)
    plain.load_state_dict(fast.state_dict())
    x = (3 * torch.randn(2, 6, 8, 12, 16) + 5).requires_grad_()
    torch.testing.assert_close(fast(x), plain(x), atol=1e-5, rtol=1e-5)
    weights = torch.randn(2, 6, 8, 12, 16)
    grads = [torch.autograd.grad((norm(x) * weights).sum(), [x, *norm.parameters()]) for norm in (fast, plain)]
    _assert_grads_close(*grads)


@pytest.mark.parametrize("rows, repeats", [(1, 1), (2, 3)])
def test_shared_block_input_matches_the_concatenation(rows, repeats):
    torch.manual_seed(rows)
    block = PreActResBlock(32, 16)
    with torch.no_grad():
        # Not the initial scale 1 / shift 0, so that slicing the wrong channels of norm1 shows.
        block.norm1.weight.uniform_(0.5, 1.5)
        block.norm1.bias.uniform_(-0.5, 0.5)
    x = torch.randn(rows * repeats, 16, 32, 32, 32, requires_grad=True)
    shared = torch.randn(rows, 16, 32, 32, 32, requires_grad=True)
    fast = block.forward_shared(x, shared)
    plain = _plain_shared(block, x, shared)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    weights = torch.randn_like(plain)
    grads_fast = torch.autograd.grad((fast * weights).sum(), [x, shared, *block.parameters()])
    grads_plain = torch.autograd.grad((plain * weights).sum(), [x, shared, *block.parameters()])
    _assert_grads_close(grads_fast, grads_plain)


def test_shared_block_input_rejects_a_block_without_projection():
    with pytest.raises(ValueError, match="projection"):
        PreActResBlock(16, 16).forward_shared(torch.zeros(2, 8, 4, 4, 4), torch.zeros(1, 8, 4, 4, 4))


@pytest.mark.parametrize("queries, keys", [(5, 4096), (512, 5)])
def test_written_out_attention_matches_multihead_attention(queries, keys):
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(16, 4, batch_first=True)
    x, context = torch.randn(6, queries, 16), torch.randn(6, keys, 16)
    torch.testing.assert_close(incontext_module._attend(attention, x, context), _plain_attend(attention, x, context), atol=1e-5, rtol=1e-5)


def test_logits_loss_and_gradients_match_the_plain_model(plain):
    torch.manual_seed(0)
    model = InContextSegmenter(CONFIG)
    query, reference, masks, targets = _inputs()
    valid = torch.tensor([[True, True, False], [True, True, True]])

    def loss_and_grads():
        model.zero_grad()
        logits = model(query, reference, masks)
        loss = mass_loss(logits, targets, valid).total
        loss.backward()
        return logits.detach(), loss.detach(), [p.grad.clone() for p in model.parameters()]

    fast, plain_result = loss_and_grads(), plain(loss_and_grads)()
    # Logits of a few units: 5e-5 is float32 rounding through ~20 layers, not a change of formulation.
    torch.testing.assert_close(fast[0], plain_result[0], atol=5e-5, rtol=1e-5)
    torch.testing.assert_close(fast[1], plain_result[1], atol=1e-6, rtol=1e-6)
    _assert_grads_close(fast[2], plain_result[2])


@pytest.mark.parametrize("in_channels", [1, 2])
def test_mask_token_gradient_matches_the_plain_reconstruction(in_channels):
    torch.manual_seed(in_channels)
    model = ReconstructionNet(ReconstructionConfig(EncoderConfig(channels=(8, 16), in_channels=in_channels)))
    with torch.no_grad():
        model.mask_token.fill_(0.7)
    g = torch.Generator().manual_seed(0)
    image = torch.randn(2, in_channels, 32, 32, 32, generator=g)
    mask = torch.rand(2, 1, 32, 32, 32, generator=g) > 0.3
    target = torch.randn(2, in_channels, 32, 32, 32, generator=g)

    def plain_forward() -> torch.Tensor:
        hidden = mask.float()
        visible = image * (1 - hidden) + model.mask_token * hidden
        return model.decoder(model.head_norm(model.encoder(visible)[-1]))

    results = []
    for forward in (lambda: model(image, mask).reconstruction, plain_forward):
        model.zero_grad()
        output = forward()
        ((output - target) ** 2).mean().backward()
        results.append((output.detach(), [p.grad.clone() for p in model.parameters()]))
    (fast, fast_grads), (plain, plain_grads) = results
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    _assert_grads_close(fast_grads, plain_grads)
    token = [name for name, _ in model.named_parameters()].index("mask_token")
    assert float(plain_grads[token].abs()) > 0
    torch.testing.assert_close(fast_grads[token], plain_grads[token], atol=0, rtol=1e-4)


@pytest.mark.slow
def test_training_steps_reach_the_same_weights(plain):
    """Four SGD steps from the same start end at the same weights and logits.

    SGD, not the trainer's LAMB: Adam-type updates are ``m / sqrt(v)``, so
    an element whose gradient is float32 noise (a bias that an InstanceNorm
    subtracts again has an exact gradient of 0) takes a full step of either
    sign, and any two float32 formulations part by the learning rate there.
    The optimiser is not what changed; the gradients it is fed are.
    """
    torch.manual_seed(0)
    fast_model = InContextSegmenter(CONFIG)
    plain_model = copy.deepcopy(fast_model)
    start = copy.deepcopy(fast_model.state_dict())

    def train(model):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        for step in range(4):
            query, reference, masks, targets = _inputs(seed=step)
            loss = mass_loss(model(query, reference, masks), targets, torch.ones(2, 3, dtype=torch.bool)).total
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            return model.state_dict(), model(*_inputs(seed=10)[:3])

    (fast_weights, fast_logits), (plain_weights, plain_logits) = train(fast_model), plain(train)(plain_model)
    moved = max(float((value - start[name]).abs().max()) for name, value in fast_weights.items())
    assert moved > 0.05, "the steps must move the weights well beyond the tolerance"
    # Logits of magnitude ~2 here; InstanceNorm of low-variance channels amplifies weight differences
    # (~1e-6 after these steps) into them, which is why the learning rate is small.
    torch.testing.assert_close(fast_logits, plain_logits, atol=1e-4, rtol=1e-4)
    for name, value in fast_weights.items():
        torch.testing.assert_close(value, plain_weights[name], atol=1e-4, rtol=1e-4, msg=name)
