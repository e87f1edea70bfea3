"""One-line messages for a config that fails the workflow's JSON schema.

Snakemake reports a failed ``validate(config, schema)`` with the whole schema
and the whole config, some two thousand lines in which the line that matters
is easy to miss; these messages keep only the key's path and what is wrong.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from jsonschema import ValidationError

__all__ = ["config_error", "dataset_selection", "key_path"]


def key_path(path: Iterable[str | int]) -> str:
    """A config key's path as written in YAML terms: ``standardize.spacing[1]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def config_error(error: ValidationError) -> str:
    """The one-line message for a schema violation: the key's path and the reason.

    An unknown key (``additionalProperties: false``) is named with the keys
    allowed there, and the closest one when it looks like a typo.
    """
    where = key_path(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        close = difflib.get_close_matches(unknown[0], allowed, n=1) if len(unknown) == 1 else []
        hint = f"did you mean {close[0]!r}? " if close else ""
        keys = f"key {unknown[0]!r}" if len(unknown) == 1 else f"keys {', '.join(repr(key) for key in unknown)}"
        return f"config error: unknown {keys} {f'in {where}' if where else 'at top level'} ({hint}allowed: {', '.join(allowed)})"
    alternatives = [sub.get("required", []) for sub in error.schema.get("oneOf", [])] if error.validator == "oneOf" else []
    if alternatives and all(len(keys) == 1 for keys in alternatives):
        return f"config error: {where or 'top level'}: give exactly one of {' or '.join(repr(keys[0]) for keys in alternatives)}"
    return f"config error: {where or 'top level'}: {' '.join(error.message.split())}"


def dataset_selection(names: Sequence[str], key: str, configured: Iterable[str]) -> list[str]:
    """``names`` (a config list of dataset names, e.g. ``pretrain.datasets``), checked against ``configured``.

    Raises:
        ValueError: a name is not under ``datasets``; the message names the key,
            the unknown names and the configured ones.
    """
    known = list(configured)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"{key} names {', '.join(map(repr, unknown))}, which {'is' if len(unknown) == 1 else 'are'} not "
                         f"under datasets (configured: {', '.join(known)})")
    return list(names)
