from __future__ import annotations

import pytest
import torch

from mass_core.models.encoder import EncoderConfig, ResidualEncoder
from mass_core.pretrain.checkpoint import (
    TrainingState,
    load_checkpoint,
    load_encoder,
    save_checkpoint,
    save_encoder,
    strip_wrapper_prefixes,
)

CONFIG = EncoderConfig(channels=(2, 4), blocks_per_stage=1)


def _encoder(seed=0) -> ResidualEncoder:
    torch.manual_seed(seed)
    return ResidualEncoder(CONFIG)


def _state(method="mass", encoder=None) -> TrainingState:
    encoder = encoder or _encoder()

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder

    weights = Wrapper().state_dict()
    return TrainingState(
        method=method,
        model_config={"encoder": CONFIG.to_dict(), "token_scales": 1},
        train_config={"steps": 10},
        step=3,
        model=weights,
        ema=weights,
        ema_updates=3,
        optimizer={"state": {}, "param_groups": []},
        scheduler={"last_epoch": 3},
        metrics=[{"step": 2, "loss": 1.5}],
    )


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_round_trip_with_weights_only(tmp_path):
    save_checkpoint(tmp_path / "latest.pt", _state())
    raw = torch.load(tmp_path / "latest.pt", weights_only=True)
    assert raw["method"] == "mass" and raw["step"] == 3
    state = load_checkpoint(tmp_path / "latest.pt", "mass", {"encoder": CONFIG.to_dict(), "token_scales": 1})
    assert state.ema_updates == 3 and set(state.model) == {f"encoder.{k}" for k in _encoder().state_dict()}
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_a_checkpoint_written_before_the_training_records_loads_with_empty_ones(tmp_path):
    raw = {"format": "mass-checkpoint-v1", **_state().__dict__}
    del raw["standardization"], raw["crop_size"]
    torch.save(raw, tmp_path / "old.pt")
    state = load_checkpoint(tmp_path / "old.pt", "mass")
    assert state.standardization == [] and state.crop_size == [] and state.step == 3


def test_wrong_method_and_shape_are_clear_errors(tmp_path):
    save_checkpoint(tmp_path / "latest.pt", _state(method="mim"))
    with pytest.raises(ValueError, match="written by pretext task 'mim', not 'mass'"):
        load_checkpoint(tmp_path / "latest.pt", "mass")
    with pytest.raises(ValueError, match="another shape: token_scales: checkpoint 1, expected 3"):
        load_checkpoint(tmp_path / "latest.pt", "mim", {"encoder": CONFIG.to_dict(), "token_scales": 3})
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a MASS training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        load_checkpoint(tmp_path / "garbage.pt")


def test_encoder_file_has_clean_documented_keys(tmp_path):
    encoder = _encoder()
    save_encoder(tmp_path / "encoder.pt", encoder, "mass", 10)
    raw = torch.load(tmp_path / "encoder.pt", weights_only=True)
    assert set(raw) == {"format", "method", "step", "encoder_config", "state_dict"}
    assert set(raw["state_dict"]) == set(encoder.state_dict())
    assert not any(k.startswith("module.") for k in raw["state_dict"])
    assert _same(load_encoder(tmp_path / "encoder.pt"), encoder)


def test_encoder_from_a_training_checkpoint_uses_the_ema_weights(tmp_path):
    state = _state()
    state.ema = {k: v + 1 for k, v in state.ema.items()}
    save_checkpoint(tmp_path / "final.pt", state)
    loaded = load_encoder(tmp_path / "final.pt")
    assert torch.equal(loaded.stem.conv.weight, state.ema["encoder.stem.conv.weight"])


def test_ddp_prefix_is_tolerated(tmp_path):
    encoder = _encoder()
    torch.save({f"module.{k}": v for k, v in encoder.state_dict().items()}, tmp_path / "ddp.pt")
    assert _same(load_encoder(tmp_path / "ddp.pt", CONFIG), encoder)
    with pytest.raises(ValueError, match="pass config"):
        load_encoder(tmp_path / "ddp.pt")
    assert strip_wrapper_prefixes({"module._orig_mod.a.b": 1}) == {"a.b": 1}


def test_encoder_of_another_shape_fails_clearly(tmp_path):
    save_encoder(tmp_path / "encoder.pt", _encoder(), "mass", 1)
    with pytest.raises(ValueError, match="another shape: channels"):
        load_encoder(tmp_path / "encoder.pt", EncoderConfig(channels=(2, 8)))
    torch.save(ResidualEncoder(EncoderConfig(channels=(2, 8))).state_dict(), tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="shape mismatch: stages.1.0.conv1.conv.weight"):
        load_encoder(tmp_path / "bare.pt", CONFIG)
