from __future__ import annotations

import dataclasses

import pytest
import torch

from mass_core.models.encoder import EncoderConfig
from mass_core.models.incontext import InContextConfig, InContextSegmenter, TaskTokens

torch.set_num_threads(1)

CONFIG = InContextConfig(EncoderConfig(channels=(4, 8, 8)), token_scales=2, learned_tokens=2, heads=2)


@pytest.fixture(scope="module", params=[False, True], ids=["tokens", "prototypes"])
def model(request) -> InContextSegmenter:
    torch.manual_seed(0)
    # float64 so that "independent" can be asserted to ~1e-12, not float32 kernel noise.
    return InContextSegmenter(dataclasses.replace(CONFIG, prototypes=request.param)).double().eval()


def _inputs(b=2, k=3, size=(16, 16, 16), seed=0):
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(b, 1, *size, generator=g, dtype=torch.float64)
    reference = torch.randn(b, 1, *size, generator=g, dtype=torch.float64)
    masks = (torch.rand(b, k, *size, generator=g) > 0.7).double()
    return query, reference, masks


def test_parameter_count_is_tiny():
    assert sum(p.numel() for p in InContextSegmenter(CONFIG).parameters()) < 50_000


@torch.no_grad()
def test_masks_are_predicted_independently(model):
    query, reference, masks = _inputs(k=4)
    together = model(query, reference, masks)
    for k in range(4):
        alone = model(query, reference, masks[:, k : k + 1])
        assert torch.allclose(together[:, k : k + 1], alone, atol=1e-10)
    # Reordering or replacing the other masks changes nothing for mask 0.
    others = torch.cat([masks[:, :1], 1 - masks[:, 1:], masks[:, 1:2]], dim=1)
    assert torch.allclose(model(query, reference, others)[:, 0], together[:, 0], atol=1e-10)
    flipped = model(query, reference, masks.flip(1))
    assert torch.allclose(flipped.flip(1), together, atol=1e-10)


@torch.no_grad()
def test_batch_items_are_independent(model):
    query, reference, masks = _inputs(b=3)
    together = model(query, reference, masks)
    assert torch.allclose(model(query[1:2], reference[1:2], masks[1:2]), together[1:2], atol=1e-10)


@pytest.mark.parametrize("query_size, reference_size", [((16, 16, 16), (16, 16, 16)), ((8, 12, 20), (16, 8, 12)), ((32, 16, 8), (8, 8, 8))])
@torch.no_grad()
def test_other_crop_sizes(model, query_size, reference_size):
    query, _, _ = _inputs(b=1, size=query_size)
    _, reference, masks = _inputs(b=1, k=2, size=reference_size)
    assert model(query, reference, masks).shape == (1, 2, *query_size)


@torch.no_grad()
def test_tokens_computed_once_serve_many_windows(model):
    query, reference, masks = _inputs(b=1)
    task = model.encode_task(reference, masks)
    assert (task.batch_size, task.num_masks) == (1, 3)
    assert [tuple(t.shape) for t in task.tokens] == [(1, 3, 3, 8), (1, 3, 3, 8)]
    assert torch.allclose(model.segment(query, task), model(query, reference, masks))
    windows = torch.cat([query, query.flip(2), 2 * query])
    batched = model.segment(windows, task)
    assert batched.shape == (3, 3, 16, 16, 16)
    assert torch.allclose(batched[1:2], model.segment(windows[1:2], task), atol=1e-10)


@torch.no_grad()
def test_token_ensembling(model):
    query, reference, masks = _inputs(b=1)
    task = model.encode_task(reference, masks)
    assert torch.allclose(model.segment(query, TaskTokens.mean([task, task])), model.segment(query, task))
    other = model.encode_task(reference.flip(3), masks.flip(3))
    mean = TaskTokens.mean([task, other])
    assert all(torch.allclose(m, (a + b) / 2) for m, a, b in zip(mean.tokens, task.tokens, other.tokens))
    if model.config.prototypes:
        assert torch.allclose(mean.prototypes, (task.prototypes + other.prototypes) / 2)
    # Joining tasks along K and picking masks back out gives the same predictions.
    joined = TaskTokens.concat([task, other])
    assert joined.num_masks == 2 * task.num_masks
    assert torch.allclose(model.segment(query, joined.select(range(task.num_masks, 2 * task.num_masks))), model.segment(query, other))
    with pytest.raises(ValueError, match="same"):
        TaskTokens.mean([task, model.encode_task(reference, masks[:, :1])])


def test_bad_inputs(model):
    query, reference, masks = _inputs(b=2)
    with pytest.raises(ValueError, match="query"):
        model(query[..., :10], reference, masks)
    with pytest.raises(ValueError, match="ref_masks"):
        model(query, reference, masks[..., :8])
    task = model.encode_task(reference, masks)
    with pytest.raises(ValueError, match="batch size"):
        model.segment(torch.cat([query, query]), task)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"token_scales": 4}, "token_scales"), ({"heads": 3}, "heads"), ({"learned_tokens": -1}, "learned_tokens")],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InContextConfig(EncoderConfig(channels=(4, 8, 8)), **kwargs)


def test_config_round_trip():
    assert InContextConfig.from_dict(CONFIG.to_dict()) == CONFIG
    with pytest.raises(ValueError, match="unknown"):
        InContextConfig.from_dict({"depth": 3})
