"""A config that fails the schema gets one line: the key's path and what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from mass_core.config_errors import config_error

SCHEMA = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml").read_text())
DATASET = {"layout": "folder", "root": "data", "modality": "CT"}


@pytest.mark.parametrize("config, message", [
    ({"datasets": {"ct": {**DATASET, "modalty": "MR"}}},
     "config error: unknown key 'modalty' in datasets.ct (did you mean 'modality'? allowed: class_table, ignore_label, images, labels, layout, "
     "modality, phantom, pretrain_weight, recipe, references, root, split_table, standardize)"),
    ({"datasets": {"ct": DATASET}, "splits": {"zz": 1, "yy": 2}},
     "config error: unknown keys 'yy', 'zz' in splits (allowed: seed, test_fraction, val_fraction)"),
    ({"datasets": {"ct": {"layout": "folder"}}}, "config error: datasets.ct: 'root' is a required property"),
    ({"datasets": {"ct": {**DATASET, "layout": "zip"}}},
     "config error: datasets.ct.layout: 'zip' is not one of ['folder', 'nnunet', 'msd', 'phantom']"),
    ({"datasets": {"ct": {"root": "data"}}}, "config error: datasets.ct: give exactly one of 'layout' or 'recipe'"),
    ({"datasets": {"ct": {**DATASET, "recipe": "kits"}}}, "config error: datasets.ct: give exactly one of 'layout' or 'recipe'"),
])
def test_schema_violation_is_one_line_with_the_key_path(config, message):
    error = next(Draft202012Validator(SCHEMA).iter_errors(config))
    assert config_error(error) == message
