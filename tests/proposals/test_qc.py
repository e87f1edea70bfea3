from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np

from mass_core.proposals.qc import write_overlay, write_placeholder


def test_overlay_has_one_row_per_scale(tmp_path):
    image = np.random.default_rng(0).normal(size=(12, 10, 8)).astype(np.float32)
    maps = np.zeros((3, 12, 10, 8), np.uint8)
    maps[:, 2:8, 2:6, 1:5] = 1
    write_overlay(image, maps, tmp_path / "one.png", spacing=(1.0, 1.0, 2.0), title="case")
    write_overlay(image, maps[:1], tmp_path / "two.png", spacing=(1.0, 1.0, 2.0), title="case")
    tall, short = mpimg.imread(tmp_path / "one.png"), mpimg.imread(tmp_path / "two.png")
    assert tall.shape[0] > 2 * short.shape[0] and tall.shape[1] == short.shape[1]


def test_placeholder(tmp_path):
    write_placeholder(tmp_path / "p.png", "case x: skipped")
    assert mpimg.imread(tmp_path / "p.png").ndim == 3
