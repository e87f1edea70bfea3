"""The settings table of ``config/README.md``, generated from the config schema.

``python -m mass_core.config_table`` rewrites the table between its markers;
``--check`` exits 1 when the committed table differs. The schema owns every
key, default and meaning, so the README cannot drift from it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

__all__ = ["BEGIN", "END", "render", "settings_rows", "updated_readme"]

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
EMBEDDED = ROOT / "config" / "config.yaml"
README = ROOT / "config" / "README.md"
BEGIN = "<!-- settings table: generated from workflow/schemas/config.schema.yaml by `python -m mass_core.config_table`; do not edit -->"
END = "<!-- end of settings table -->"
_MISSING = object()


def _resolve(node: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    if "$ref" not in node:
        return dict(node)
    target = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def _value(value: Any) -> str:
    return "`" + json.dumps(value, separators=(", ", ": ")) + "`"


def settings_rows(schema: Mapping[str, Any], embedded: Mapping[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    """``(key path, default, embedded value if it differs, meaning)`` for every leaf key of the schema."""

    def walk(node: Mapping[str, Any], path: str, inherited: Any, config: Any) -> Iterator[tuple[str, str, str, str]]:
        node = _resolve(node, schema)
        if "properties" in node:
            default = node.get("default", inherited)
            for key, child in node["properties"].items():
                sub_default = default.get(key, _MISSING) if isinstance(default, Mapping) else _MISSING
                sub_config = config.get(key, _MISSING) if isinstance(config, Mapping) else _MISSING
                yield from walk(child, f"{path}.{key}" if path else key, sub_default, sub_config)
            return
        if path == "datasets":
            yield from walk(node["additionalProperties"], "datasets.<name>", _MISSING, _MISSING)
            return
        default = node.get("default", inherited)
        shown = "(required)" if default is _MISSING else _value(default)
        differs = config is not _MISSING and config != default
        meaning = " ".join(node.get("description", "").split()).replace("|", "\\|")
        yield path, shown, _value(config) if differs else "", meaning

    yield from walk(schema, "", _MISSING, embedded)


def render(schema: Mapping[str, Any], embedded: Mapping[str, Any]) -> str:
    """The Markdown table, markers included."""
    lines = [BEGIN, "", "| key | default | `config/config.yaml` | meaning |", "|---|---|---|---|"]
    lines += [f"| `{key}` | {default} | {value} | {meaning} |" for key, default, value, meaning in settings_rows(schema, embedded)]
    return "\n".join([*lines, "", END])


def updated_readme(readme: str, schema: Mapping[str, Any], embedded: Mapping[str, Any]) -> str:
    """``readme`` with the text between the markers replaced by the current table."""
    start, stop = readme.index(BEGIN), readme.index(END) + len(END)
    return readme[:start] + render(schema, embedded) + readme[stop:]


def main(argv: list[str]) -> int:
    """Rewrite ``config/README.md``'s table, or with ``--check`` report whether it is current."""
    schema, embedded = (yaml.safe_load(path.read_text()) for path in (SCHEMA, EMBEDDED))
    current = README.read_text()
    wanted = updated_readme(current, schema, embedded)
    if "--check" in argv:
        if current != wanted:
            print(f"{README} is out of date: run python -m mass_core.config_table", file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
