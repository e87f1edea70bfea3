"""Building a settings dataclass from one config section.

A settings class may declare two class attributes (not fields):

- ``CONFIG_KEYS``: config key -> field name, where the config spells a field
  differently (the one place that maps them);
- ``OUTSIDE_KEYS``: keys of its section that are no field of it because other
  code reads them (e.g. ``on_error``, read by the stage that runs the class).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

__all__ = ["config_key", "from_section"]

T = TypeVar("T")


def config_key(cls: type, field: str) -> str:
    """The config key of ``cls``'s field ``field`` (its name unless ``CONFIG_KEYS`` renames it)."""
    return {name: key for key, name in getattr(cls, "CONFIG_KEYS", {}).items()}.get(field, field)


def _default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _value(field: dataclasses.Field, value: Any, path: str) -> Any:
    """``value`` as the field holds it: a nested section becomes its dataclass, a list a tuple."""
    default = _default(field)
    if dataclasses.is_dataclass(default) and isinstance(value, Mapping):
        return from_section(type(default), value, path)
    if isinstance(value, list) and "tuple" in str(field.type):
        return tuple(value)
    return value


def from_section(cls: type[T], section: Mapping[str, Any], name: str, supplied: Mapping[str, Any] | None = None) -> T:
    """Build ``cls`` from the config section at key path ``name``.

    Keys map to fields through ``cls.CONFIG_KEYS``; ``cls.OUTSIDE_KEYS`` are
    accepted and left to their readers. A nested mapping whose field defaults to
    a dataclass is built the same way (path ``name.key``); lists become tuples
    where the field is a tuple. ``supplied`` gives fields the caller built
    (from other sections, e.g. a model's encoder, or from this section's key of
    the field, which is then not read here).

    Raises:
        ValueError: a key that is no field, naming its config key path.
    """
    supplied = dict(supplied or {})
    fields = {config_key(cls, field.name): field for field in dataclasses.fields(cls)}
    unknown = set(section) - set(fields) - set(getattr(cls, "OUTSIDE_KEYS", ()))
    if unknown:
        raise ValueError(f"{name} has unknown keys {sorted(f'{name}.{key}' for key in unknown)}")
    values = {fields[key].name: _value(fields[key], value, f"{name}.{key}")
              for key, value in section.items() if key in fields and fields[key].name not in supplied}
    return cls(**values, **supplied)
