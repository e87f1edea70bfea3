"""Building a settings dataclass from one config section."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

__all__ = ["from_section"]

T = TypeVar("T")


def from_section(cls: type[T], section: Mapping[str, Any], name: str) -> T:
    """``cls(**section)``, with unknown keys rejected by a ``ValueError`` naming config key ``name``."""
    unknown = set(section) - {field.name for field in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{name} has unknown keys {sorted(unknown)}")
    return cls(**dict(section))
