from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np

from mass_core.proposals.qc import write_overlay, write_placeholder


def _coloured(png: np.ndarray) -> int:
    """Pixels that are not a shade of grey: the grey image and black text never are."""
    rgb = png[..., :3]
    return int(np.count_nonzero(rgb.max(axis=-1) - rgb.min(axis=-1) > 0.05))


def test_overlay_has_one_row_per_scale(tmp_path):
    image = np.random.default_rng(0).normal(size=(12, 10, 8)).astype(np.float32)
    maps = np.zeros((3, 12, 10, 8), np.uint8)
    maps[:, 2:8, 2:6, 1:5] = 1
    write_overlay(image, maps, tmp_path / "one.png", spacing=(1.0, 1.0, 2.0), title="case")
    write_overlay(image, maps[:1], tmp_path / "two.png", spacing=(1.0, 1.0, 2.0), title="case")
    tall, short = mpimg.imread(tmp_path / "one.png"), mpimg.imread(tmp_path / "two.png")
    assert tall.shape[0] > 2 * short.shape[0] and tall.shape[1] == short.shape[1]


def test_overlay_colours_the_proposals_and_only_them(tmp_path):
    image = np.random.default_rng(0).normal(size=(12, 10, 8)).astype(np.float32)
    small, large = np.zeros((2, 1, 12, 10, 8), np.uint8)
    small[0, 5:7, 4:6, 3:5] = 1
    large[0, 1:11, 1:9, 1:7] = 1
    for name, maps in (("none", np.zeros_like(small)), ("small", small), ("large", large)):
        write_overlay(image, maps, tmp_path / f"{name}.png", spacing=(1.0, 1.0, 1.0), title="case", center=(6, 5, 4))
    none, few, many = (_coloured(mpimg.imread(tmp_path / f"{n}.png")) for n in ("none", "small", "large"))
    # Without proposals the picture is the grey image; a proposal tints it, a larger one over more pixels.
    assert none == 0 and 0 < few < many


def test_placeholder_shows_its_text(tmp_path):
    write_placeholder(tmp_path / "p.png", "case x: skipped")
    write_placeholder(tmp_path / "blank.png", "")
    text, blank = mpimg.imread(tmp_path / "p.png"), mpimg.imread(tmp_path / "blank.png")
    assert text.shape == blank.shape
    assert (blank[..., :3] > 0.99).all()
    assert np.count_nonzero(text[..., :3].min(axis=-1) < 0.5) > 50
