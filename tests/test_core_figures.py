"""Figures that explain themselves (issue 23): what each figure writes on itself, read back from
the labels it draws (``notes``), and where the mask preview's legend swatches sit."""
from __future__ import annotations

import numpy as np
import pytest

from stas_core import plot
from stas_core.layout import BoundarySpec, TokenClass


def test_mask_preview_figure_has_legend_and_axes():
    notes: list[str] = []
    img = plot.mask_preview_figure((6, 6, 8), BoundarySpec(first_frame=False, head=2, tail=1), notes=notes)
    assert img.ndim == 3 and img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1
    # legend: every colour the tiles use is named
    for name in ("first frame", "head", "tail", "not steered (dark)"):
        assert name in notes, notes
    # the latent frame over each tile, the first one called so
    assert "latent frame 0 (first)" in notes and "latent frame 5" in notes and "latent frame 6" not in notes
    # what the axes of a tile are
    axis = [n for n in notes if "token rows top to bottom (6)" in n and "token columns left to right (8)" in n]
    assert axis, notes
    # the tiles themselves: head rows (2) in the head colour, first frame darkened (first_frame off)
    assert (np.abs(img - plot.CLASS_COLOURS[TokenClass.HEAD]).max(-1) < 0.02).sum() >= 5 * 2 * 8
    assert (np.abs(img - plot.CLASS_COLOURS[TokenClass.FIRST_FRAME] * 0.3).max(-1) < 0.02).sum() > 0


def test_mask_preview_colours_steered_rows_by_the_spec():
    """A second head row is drawn as head (it was drawn in the interior grey, as if steered as interior)."""
    grid = (2, 4, 4)
    img = plot.mask_preview(grid, BoundarySpec(head=2, tail=0), cell=4, gap=2)
    tile1 = img[:, 4 * 4 + 2:]
    np.testing.assert_allclose(tile1[4 + 2, 2], plot.CLASS_COLOURS[TokenClass.HEAD], rtol=1e-6)  # row 1
    np.testing.assert_allclose(tile1[8 + 2, 2], plot.CLASS_COLOURS[TokenClass.INTERIOR] * 0.3, rtol=1e-6)


def test_hierarchy_names_channels_and_explains_the_blocks_after_the_steered_one():
    m = np.random.default_rng(0).uniform(1, 100, (3, 4, 3))
    notes: list[str] = []
    foot = "channels shown: max |h| over the recorded channels 99, 17, 80, 79 in every block"
    img = plot.hierarchy_image(m, [0, 1, 2, 3], [0, 1, 2], "t", steered_blocks=[2], footnotes=[foot], notes=notes)
    text = " ".join(notes)
    assert "block 2 *" in notes and "block 1" in notes and "block 3" in notes
    assert "99, 17, 80, 79" in text and "residual stream" in text and "steered by STAS" in text
    plain = plot.hierarchy_image(m, [0, 1, 2, 3], [0, 1, 2], "t")
    assert img.shape[0] > plain.shape[0] and img.shape[1] == plain.shape[1]  # footnote lines below, same layout


@pytest.mark.parametrize("n", [1, 3])
def test_profile_names_what_a_value_is(n):
    grid = (2, 2, 2)
    v = np.ones((2, 4)) * np.arange(1, 5)
    cls = np.zeros((2, 4), dtype=np.int64)
    notes: list[str] = []
    label = "max |h| over channels " + ", ".join(str(c) for c in range(n))
    plot.token_profile_image(v, cls, np.arange(4), grid, "title", y_label=label, notes=notes)
    assert label in notes and "title" in notes and "interior" in notes
