"""Rendering with numpy only (Pillow is used by callers when they need text): images are
float32 arrays [H, W, 3] in 0..1, the layout ComfyUI's IMAGE type uses per frame."""
from __future__ import annotations

import numpy as np

from .layout import BoundarySpec, Grid, TokenClass, token_classes

# Colour per TokenClass: interior grey, head orange, tail blue, first frame red.
CLASS_COLOURS = np.array([
    [0.35, 0.35, 0.38],
    [1.00, 0.62, 0.10],
    [0.20, 0.55, 1.00],
    [0.90, 0.15, 0.20],
], dtype=np.float32)


def mask_preview(grid: Grid, spec: BoundarySpec, cell: int = 0, gap: int = 2, max_cols: int = 8) -> np.ndarray:
    """One tile per latent frame (H' x W' token cells), tiles in rows of ``max_cols``.

    Steered tokens take their class colour; tokens the spec leaves alone are drawn dark,
    so the picture shows exactly what STAS Model Patch will touch.
    """
    t, h, w = grid
    if cell <= 0:
        cell = max(2, min(16, 256 // max(h, w)))
    full = token_classes(grid).numpy().reshape(t, h, w)
    chosen = token_classes(grid, spec).numpy().reshape(t, h, w) != TokenClass.INTERIOR
    rgb = CLASS_COLOURS[full] * np.where(chosen, 1.0, 0.3)[..., None]
    cols = min(t, max_cols)
    rows = -(-t // cols)
    th, tw = h * cell, w * cell
    img = np.ones((rows * th + (rows - 1) * gap, cols * tw + (cols - 1) * gap, 3), dtype=np.float32)
    for i in range(t):
        r, c = divmod(i, cols)
        tile = np.repeat(np.repeat(rgb[i], cell, axis=0), cell, axis=1)
        if cell >= 4:  # faint cell borders so single tokens can be counted
            tile[::cell, :, :] *= 0.8
            tile[:, ::cell, :] *= 0.8
        img[r * (th + gap):r * (th + gap) + th, c * (tw + gap):c * (tw + gap) + tw] = tile
    return img
