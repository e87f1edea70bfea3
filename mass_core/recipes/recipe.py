"""What a recipe is: the files it expects, how it lists cases, the classes it yields."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mass_core.datasets import Listing, SkippedCase

__all__ = ["Recipe", "missing"]


@dataclass(frozen=True)
class Recipe:
    """How to read one public release.

    Args:
        layout: the files the recipe expects under ``root``, for messages and docs.
        cases: lists the cases under ``root``, and the case folders it cannot
            use (an expected file missing), which the manifest reports.
        classes: class id -> name of the label maps the cases produce.
    """

    layout: str
    cases: Callable[[Path], Listing]
    classes: dict[int, str] = field(default_factory=dict)


def missing(case_id: str, root: Path, *paths: Path) -> SkippedCase:
    """The row of a case left out because ``paths`` (under ``root``) do not exist: ``no <path>, <path>``."""
    return SkippedCase(case_id, "no " + ", ".join(str(path.relative_to(root)) for path in paths))
