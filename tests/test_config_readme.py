"""config/README.md's settings table is the one generated from the config schema."""

from __future__ import annotations

import yaml

from mass_core.config_table import EMBEDDED, README, SCHEMA, render, settings_rows, updated_readme


def test_readme_table_is_generated_from_the_schema():
    schema, embedded = (yaml.safe_load(path.read_text()) for path in (SCHEMA, EMBEDDED))
    current = README.read_text()
    assert current == updated_readme(current, schema, embedded), "run python -m mass_core.config_table"


def test_every_leaf_key_has_its_schema_default():
    schema = {"type": "object", "properties": {
        "train": {"type": "object", "default": {}, "properties": {"ema_decay": {"type": "number", "default": 0.99, "description": "EMA | decay"}}},
        "aug": {"$ref": "#/$defs/aug", "default": {"p": 0.2}},
    }, "$defs": {"aug": {"type": "object", "properties": {"p": {"type": "number"}}}}}
    rows = list(settings_rows(schema, {"train": {"ema_decay": 0.9}}))
    assert rows == [("train.ema_decay", "`0.99`", "`0.9`", "EMA \\| decay"), ("aug.p", "`0.2`", "", "")]
    assert "| `aug.p` | `0.2` |  |  |" in render(schema, {})
