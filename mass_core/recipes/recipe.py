"""What a recipe is: the files it expects, how it lists cases, the classes it yields."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mass_core.datasets import CaseSource

__all__ = ["Recipe"]


@dataclass(frozen=True)
class Recipe:
    """How to read one public release.

    Args:
        layout: the files the recipe expects under ``root``, for messages and docs.
        cases: lists the cases under ``root``.
        classes: class id -> name of the label maps the cases produce.
    """

    layout: str
    cases: Callable[[Path], list[CaseSource]]
    classes: dict[int, str] = field(default_factory=dict)
