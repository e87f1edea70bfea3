"""Shared fixtures of the recipe tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def release(request, tmp_path_factory):
    """The test module's mimic release (``MIMIC.write``), written once into a folder named ``RELEASE_FOLDER``."""
    root = tmp_path_factory.mktemp("release") / request.module.RELEASE_FOLDER
    request.module.MIMIC.write(root)
    return root
