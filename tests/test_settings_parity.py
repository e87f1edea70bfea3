"""The config schema and the settings dataclasses agree key by key: names, defaults and limits."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, NamedTuple

import pytest
import yaml

from mass_core.config_section import config_key, from_section
from mass_core.evaluate.fewshot import FewshotParams
from mass_core.evaluate.finetune import FinetuneParams
from mass_core.evaluate.probe import ProbeParams
from mass_core.manifest import SplitParams
from mass_core.models.encoder import EncoderConfig
from mass_core.models.incontext import InContextConfig
from mass_core.pretrain.augment import IntensityAugConfig, SpatialAugConfig
from mass_core.pretrain.heldout import HeldOutConfig
from mass_core.pretrain.mass import MassConfig
from mass_core.pretrain.mim import MimConfig
from mass_core.pretrain.mim_hier import MimHierConfig
from mass_core.pretrain.sampler import SamplerConfig
from mass_core.pretrain.trainer import TrainConfig
from mass_core.proposals.generate import ProposalParams
from mass_core.proposals.recall import RecallParams
from mass_core.standardize import StandardizeParams

SCHEMA = yaml.safe_load((Path(__file__).parents[1] / "workflow" / "schemas" / "config.schema.yaml").read_text())


def schema_section(path: str) -> dict[str, Any]:
    """The schema object at config key path ``path``, ``$ref`` resolved."""
    node = SCHEMA
    for key in path.split("."):
        node = node["properties"][key]
        if "$ref" in node:
            node = {**SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def config_keys(cls: type, derived: tuple[str, ...] = ()) -> set[str]:
    """Keys a section of ``cls`` may hold: its fields under their config names, minus fields built elsewhere."""
    own = {config_key(cls, f.name) for f in dataclasses.fields(cls) if f.name not in derived}
    return own | set(getattr(cls, "OUTSIDE_KEYS", ()))


class Pair(NamedTuple):
    path: str
    build: Callable[[dict[str, Any]], Any]
    keys: set[str]
    # Sections whose defaults come as a whole from the parent key ($defs/intensity_aug).
    per_key_defaults: bool = True


PAIRS = [
    Pair("splits", SplitParams.from_config, config_keys(SplitParams)),
    Pair("standardize", StandardizeParams.from_config, config_keys(StandardizeParams)),
    Pair("proposals", ProposalParams.from_config, config_keys(ProposalParams)),
    Pair("proposals.recall", RecallParams.from_config, config_keys(RecallParams)),
    Pair("pretrain.train", TrainConfig.from_dict, config_keys(TrainConfig)),
    Pair("pretrain.encoder", EncoderConfig.from_dict, config_keys(EncoderConfig)),
    Pair("pretrain.mass", lambda s: MassConfig.from_config({}, s), config_keys(MassConfig)),
    Pair("pretrain.mass.model", lambda s: InContextConfig.from_config({}, s), config_keys(InContextConfig, ("encoder",))),
    Pair("pretrain.mass.sampler", SamplerConfig.from_dict, config_keys(SamplerConfig)),
    Pair("pretrain.mass.sampler.query_spatial", lambda s: from_section(SpatialAugConfig, s, "query_spatial"), config_keys(SpatialAugConfig)),
    Pair("pretrain.mass.sampler.query_intensity", lambda s: from_section(IntensityAugConfig, s, "query_intensity"),
         config_keys(IntensityAugConfig), per_key_defaults=False),
    Pair("pretrain.mass.heldout", HeldOutConfig.from_config, config_keys(HeldOutConfig)),
    Pair("pretrain.mim", lambda s: MimConfig.from_config({}, s), config_keys(MimConfig, ("model",))),
    Pair("pretrain.mim_hier", lambda s: MimHierConfig.from_config({}, s),
         config_keys(MimHierConfig, ("mim",)) | config_keys(MimConfig, ("model",))),
    Pair("evaluation.finetune", FinetuneParams.from_config, config_keys(FinetuneParams)),
    Pair("evaluation.fewshot", FewshotParams.from_config, config_keys(FewshotParams)),
    Pair("evaluation.probe", ProbeParams.from_config, config_keys(ProbeParams)),
]
IDS = [pair.path for pair in PAIRS]
STAGE_KEYS = {*StandardizeParams.OUTSIDE_KEYS, *ProposalParams.OUTSIDE_KEYS}


def keyed(pair: Pair) -> list[tuple[Pair, str, dict[str, Any]]]:
    return [(pair, key, spec) for key, spec in schema_section(pair.path)["properties"].items()]


KEYS = [item for pair in PAIRS for item in keyed(pair)]
KEY_IDS = [f"{pair.path}.{key}" for pair, key, _ in KEYS]


@pytest.mark.parametrize("pair", PAIRS, ids=IDS)
def test_same_keys(pair):
    assert set(schema_section(pair.path)["properties"]) == pair.keys


@pytest.mark.parametrize(("pair", "key", "spec"), KEYS, ids=KEY_IDS)
def test_same_default(pair, key, spec):
    """The schema default (which Snakemake fills in) builds the same settings as the class default."""
    if not pair.per_key_defaults:
        pytest.skip("defaults given by the parent key")
    if key in STAGE_KEYS:
        pytest.skip("read by the stage, not by the settings class")
    assert "default" in spec, f"{pair.path}.{key} has no schema default"
    assert pair.build({key: spec["default"]}) == pair.build({}), f"{pair.path}.{key}: schema default {spec['default']!r} differs from the class's"


def _numeric(spec: dict[str, Any]) -> str | None:
    types = spec.get("type") if isinstance(spec.get("type"), list) else [spec.get("type")]
    return next((t for t in types if t in ("integer", "number")), None)


def _rejects(pair: Pair, key: str, value: Any) -> bool:
    try:
        pair.build({key: value})
    except ValueError:
        return True
    return False


@pytest.mark.parametrize(("pair", "key", "spec"), [k for k in KEYS if _numeric(k[2])], ids=[i for k, i in zip(KEYS, KEY_IDS) if _numeric(k[2])])
def test_limits_agree(pair, key, spec):
    """Inclusive schema bounds are accepted, values just outside any bound rejected."""
    step = 1 if _numeric(spec) == "integer" else 1e-6
    wrong = []
    if "minimum" in spec:
        wrong += [f"rejects minimum {spec['minimum']}"] * _rejects(pair, key, spec["minimum"])
        wrong += [f"accepts {spec['minimum'] - step} below minimum"] * (not _rejects(pair, key, spec["minimum"] - step))
    if "maximum" in spec:
        wrong += [f"rejects maximum {spec['maximum']}"] * _rejects(pair, key, spec["maximum"])
        wrong += [f"accepts {spec['maximum'] + step} above maximum"] * (not _rejects(pair, key, spec["maximum"] + step))
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        if bound in spec:
            wrong += [f"accepts {bound} {spec[bound]}"] * (not _rejects(pair, key, spec[bound]))
    assert not wrong, f"{pair.path}.{key}: the settings class {', '.join(wrong)}"


@pytest.mark.parametrize(("pair", "key", "spec"), [k for k in KEYS if "enum" in k[2]], ids=[i for k, i in zip(KEYS, KEY_IDS) if "enum" in k[2]])
def test_enum_values_accepted(pair, key, spec):
    for value in spec["enum"]:
        pair.build({key: value})


def test_a_disagreement_fails(monkeypatch):
    """The default check sees a schema default that the class does not have."""
    pair = next(p for p in PAIRS if p.path == "evaluation.finetune")
    spec = {**schema_section(pair.path)["properties"]["foreground_crops"], "default": 0.5}
    with pytest.raises(AssertionError):
        test_same_default(pair, "foreground_crops", spec)


def test_unknown_key_names_its_path():
    with pytest.raises(ValueError, match=r"pretrain\.mim_hier\.mask_ratoi"):
        MimHierConfig.from_config({}, {"mask_ratoi": 0.5})
    with pytest.raises(ValueError, match=r"pretrain\.mass\.sampler\.query_spatial\.angle"):
        MassConfig.from_config({}, {"sampler": {"query_spatial": {"angle": 3}}})
