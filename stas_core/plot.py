"""Rendering with numpy (text labels through Pillow when importable, skipped otherwise): images
are float32 arrays [H, W, 3] in 0..1, the layout ComfyUI's IMAGE type uses per frame."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

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
    spec_cls = token_classes(grid, spec).numpy().reshape(t, h, w)
    chosen = spec_cls != TokenClass.INTERIOR  # a steered token takes the colour of its class under the spec
    rgb = np.where(chosen[..., None], CLASS_COLOURS[spec_cls], CLASS_COLOURS[full] * 0.3)
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


MASK_LEGEND = ("first frame", "head", "tail", "not steered (dark)")


def mask_preview_figure(grid: Grid, spec: BoundarySpec, max_cols: int = 8,
                        notes: Optional[List[str]] = None) -> np.ndarray:
    """mask_preview's tiles with a legend (class colours, dark = not steered), the latent frame
    over each tile and what the axes of a tile are (token rows down, token columns across)."""
    t, h, w = (int(g) for g in grid)
    tiles = mask_preview(grid, spec, max_cols=max_cols, gap=18)
    cell = max(2, min(16, 256 // max(h, w)))
    cols = min(t, max_cols)
    top, left, bottom = 56, 14, 40
    width = max(left + tiles.shape[1] + 14, 560)
    height = top + tiles.shape[0] + bottom
    img = np.empty((height, width, 3), dtype=np.float32)
    img[:] = BG
    gaps = (tiles == 1.0).all(-1, keepdims=True)  # mask_preview's white gaps take the background
    img[top:top + tiles.shape[0], left:left + tiles.shape[1]] = np.where(gaps, BG, tiles)
    th, tw = h * cell, w * cell
    for i in range(t):  # an outline per tile: unsteered tokens are dark on the dark background
        r, c = divmod(i, cols)
        y0, x0 = top + r * (th + 18), left + c * (tw + 18)
        for ys, xs in (((y0 - 1, y0), (x0 - 1, x0 + tw + 1)), ((y0 + th, y0 + th + 1), (x0 - 1, x0 + tw + 1)),
                       ((y0, y0 + th), (x0 - 1, x0)), ((y0, y0 + th), (x0 + tw, x0 + tw + 1))):
            _fill(img, *ys, *xs, FRAME_C)
    labels = Labels()
    labels.add(8, 8, f"Steering mask: {t} latent frames of {h} x {w} tokens (what STAS Model Patch steers)", size=12)
    entries = [(MASK_LEGEND[3], CLASS_COLOURS[TokenClass.INTERIOR] * 0.3)] + \
        [(CLASS_NAMES[c], CLASS_COLOURS[c]) for c in (TokenClass.TAIL, TokenClass.HEAD, TokenClass.FIRST_FRAME)]
    _legend(img, labels, width - 12, entries, y=30)
    x = width - 12 - 8 - int(6.3 * len(MASK_LEGEND[3]))  # outline the dark swatch
    _fill(img, 25, 26, x - 13, x - 3, FRAME_C)
    _fill(img, 34, 35, x - 13, x - 3, FRAME_C)
    _fill(img, 25, 35, x - 13, x - 12, FRAME_C)
    _fill(img, 25, 35, x - 4, x - 3, FRAME_C)
    for i in range(t):
        r, c = divmod(i, cols)
        labels.add(left + c * (tw + 18), top + r * (th + 18) - 4,
                   f"latent frame {i}" + (" (first)" if i == 0 else ""), va="b", size=10)
    labels.add(left, height - 6, f"one tile per latent frame, left to right; in a tile: token rows top to bottom "
               f"({h}), token columns left to right ({w}); head = first rows, tail = last rows of a frame",
               va="b", size=10)
    return labels.render(img, notes)


# ---------------------------------------------------------------------------------------------
# MA Visualizer figures.  Drawn in numpy (dots, lines, cells); text labels are added with Pillow
# when it is importable (ComfyUI ships it) and skipped otherwise, so every figure has the same
# layout with or without Pillow.  Dark background to match ComfyUI's default theme.
# ---------------------------------------------------------------------------------------------

BG = np.array([0.09, 0.09, 0.10], dtype=np.float32)
PANEL = np.array([0.13, 0.13, 0.15], dtype=np.float32)
FG = np.array([0.86, 0.86, 0.88], dtype=np.float32)
GRID_C = np.array([0.24, 0.24, 0.27], dtype=np.float32)
FRAME_C = np.array([0.45, 0.45, 0.50], dtype=np.float32)
NAN_C = np.array([0.18, 0.18, 0.20], dtype=np.float32)
BEFORE_C = np.array([0.62, 0.62, 0.66], dtype=np.float32)
AFTER_C = np.array([1.00, 0.25, 0.35], dtype=np.float32)
# Drawing order of the token classes in the profile: interior first, first frame on top.
DRAW_ORDER = (TokenClass.INTERIOR, TokenClass.TAIL, TokenClass.HEAD, TokenClass.FIRST_FRAME)
CLASS_NAMES = {TokenClass.FIRST_FRAME: "first frame", TokenClass.HEAD: "head", TokenClass.TAIL: "tail",
               TokenClass.INTERIOR: "interior"}

# "inferno"-like colour map anchors (dark -> bright), interpolated linearly.
_CMAP = np.array([[0.00, 0.00, 0.02], [0.26, 0.04, 0.41], [0.58, 0.15, 0.40], [0.87, 0.32, 0.23],
                  [0.98, 0.64, 0.04], [0.99, 1.00, 0.64]], dtype=np.float32)


def colormap(x: np.ndarray) -> np.ndarray:
    """Map values in 0..1 to RGB (NaN -> NAN_C)."""
    x = np.asarray(x, dtype=np.float32)
    nan = np.isnan(x)
    u = np.clip(np.nan_to_num(x), 0.0, 1.0) * (len(_CMAP) - 1)
    i = np.minimum(u.astype(np.int64), len(_CMAP) - 2)
    f = (u - i)[..., None]
    rgb = _CMAP[i] * (1 - f) + _CMAP[i + 1] * f
    rgb[nan] = NAN_C
    return rgb.astype(np.float32)


class Scale:
    """Value -> 0..1, linear from 0 or log10 between the smallest positive value and the max."""

    def __init__(self, values: np.ndarray, log: bool = False, vmin: Optional[float] = None):
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        self.log = bool(log)
        hi = float(v.max()) if v.size else 1.0
        hi = hi if hi > 0 else 1.0
        if self.log:
            pos = v[v > 0]
            lo = float(pos.min()) if pos.size else hi * 1e-3
            lo = max(lo, hi * 1e-6)
            if lo >= hi:
                lo = hi / 10.0
            self.lo, self.hi = lo / 1.25, hi * 1.25  # margins: extreme values stay off the plot's edges
        else:
            self.lo, self.hi = (0.0 if vmin is None else vmin), hi * 1.05

    def __call__(self, v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        if self.log:
            with np.errstate(divide="ignore", invalid="ignore"):
                out = (np.log10(np.maximum(v, self.lo)) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            out = (v - self.lo) / max(self.hi - self.lo, 1e-30)
        return np.where(np.isnan(v), np.nan, np.clip(out, 0.0, 1.0))

    def ticks(self, n: int = 5) -> List[float]:
        if self.log:
            a, b = math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi))
            step = max(1, (b - a) // max(1, n - 1))
            return [10.0 ** e for e in range(a, b + 1, step) if self.lo <= 10.0 ** e <= self.hi]
        span = self.hi - self.lo
        raw = span / max(1, n - 1)
        mag = 10.0 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
        step = next((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), 10 * mag)
        first = math.ceil(self.lo / step) * step
        return [first + i * step for i in range(int((self.hi - first) / step + 1e-9) + 1)]


class Labels:
    """Text labels collected while drawing, rendered at the end with Pillow (if importable)."""

    def __init__(self) -> None:
        self.items: List[Tuple[float, float, str, np.ndarray, str, str, int]] = []

    def add(self, x: float, y: float, text: str, colour=FG, ha: str = "l", va: str = "t", size: int = 12) -> None:
        self.items.append((x, y, str(text), np.asarray(colour), ha, va, size))

    def texts(self) -> List[str]:
        return [it[2] for it in self.items]

    def render(self, img: np.ndarray, notes: Optional[List[str]] = None) -> np.ndarray:
        """The image with the labels drawn; their texts also go to ``notes`` when given (tests read them)."""
        if notes is not None:
            notes.extend(self.texts())
        if not self.items:
            return img
        try:
            from PIL import Image, ImageDraw, ImageFont
        except ImportError:  # numpy-only path: same figure, no text
            return img
        pil = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
        draw = ImageDraw.Draw(pil)
        fonts: Dict[int, Any] = {}
        for x, y, text, col, ha, va, size in self.items:
            font = fonts.get(size)
            if font is None:
                try:
                    font = ImageFont.load_default(size=size)
                except TypeError:  # Pillow < 10.1: fixed bitmap font
                    font = ImageFont.load_default()
                fonts[size] = font
            l, t, r, b = draw.textbbox((0, 0), text, font=font)
            w, h = r - l, b - t
            x0 = x - (w if ha == "r" else w / 2 if ha == "m" else 0) - l
            y0 = y - (h if va == "b" else h / 2 if va == "m" else 0) - t
            draw.text((x0, y0), text, fill=tuple(int(c * 255) for c in col[:3]), font=font)
        return np.asarray(pil, dtype=np.float32) / 255.0


def pillow_available() -> bool:
    try:
        import PIL  # noqa: F401
        return True
    except ImportError:
        return False


def _fill(img: np.ndarray, y0: int, y1: int, x0: int, x1: int, colour) -> None:
    h, w = img.shape[:2]
    y0, y1, x0, x1 = max(0, y0), min(h, y1), max(0, x0), min(w, x1)
    if y1 > y0 and x1 > x0:
        img[y0:y1, x0:x1] = colour


def _dots(img: np.ndarray, xs: np.ndarray, ys: np.ndarray, colour, size: int = 1) -> None:
    h, w = img.shape[:2]
    xs, ys = np.round(xs).astype(np.int64), np.round(ys).astype(np.int64)
    r0 = -(size // 2)
    for dy in range(r0, r0 + size):
        for dx in range(r0, r0 + size):
            yy, xx = ys + dy, xs + dx
            ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            img[yy[ok], xx[ok]] = colour


def _fmt(v: float) -> str:
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1e5 or a < 1e-2:
        return f"{v:.1e}"
    return f"{v:.0f}" if a >= 100 else f"{v:.3g}"


def _y_axis(img, labels: Labels, scale: Scale, left: int, top: int, pw: int, ph: int) -> None:
    for v in scale.ticks():
        y = top + ph - 1 - float(scale(np.array([v]))[0]) * (ph - 1)
        _fill(img, int(round(y)), int(round(y)) + 1, left, left + pw, GRID_C)
        labels.add(left - 6, y, _fmt(v), ha="r", va="m", size=11)


def _frame_axis(img, labels: Labels, grid, left: int, top: int, pw: int, ph: int) -> None:
    """Latent-frame boundaries (vertical lines) and frame numbers under the plot."""
    t = int(grid[0])
    every = max(1, math.ceil(t / max(1, pw // 28)))
    for f in range(t + 1):
        x = left + int(round(f * pw / t))
        _fill(img, top, top + ph, min(x, left + pw - 1), min(x, left + pw - 1) + 1, FRAME_C)
        if f < t and f % every == 0:
            labels.add(left + (f + 0.5) * pw / t, top + ph + 4, str(f), ha="m", size=11)


def _wrap(text: str, width: int) -> List[str]:
    """``text`` broken at spaces into lines of at most ``width`` characters."""
    lines, cur = [], ""
    for word in text.split(" "):
        if cur and len(cur) + 1 + len(word) > width:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}" if cur else word
    return lines + ([cur] if cur else [])


def _chart(size: Tuple[int, int], top: int):
    """A blank chart: background, plot panel from x=70 to width-16 and from ``top`` to 44 px above
    the bottom (axis labels go there). Returns (img, labels, left, top, pw, ph)."""
    width, height = size
    left, right, bottom = 70, 16, 44
    pw, ph = width - left - right, height - top - bottom
    img = np.empty((height, width, 3), dtype=np.float32)
    img[:] = BG
    _fill(img, top, top + ph, left, left + pw, PANEL)
    return img, Labels(), left, top, pw, ph


def _legend(img, labels: Labels, x: int, entries, y: int = 16) -> None:
    """Colour swatches and names at the top right, right-aligned at ``x``, centred on ``y``;
    entries: (name, colour)."""
    for name, colour in entries:
        x -= 8 + int(6.3 * len(name))
        _fill(img, y - 4, y + 4, x - 12, x - 4, colour)
        labels.add(x, y, name, ha="l", va="m", size=11)
        x -= 14


def token_profile_image(values: np.ndarray, classes: np.ndarray, positions: np.ndarray, grid, title: str = "",
                        log: bool = False, size: Tuple[int, int] = (1024, 400), y_label: str = "",
                        notes: Optional[List[str]] = None) -> np.ndarray:
    """Token-index profile of MA magnitude: one dot per kept token at x = its token index
    (t * H'W' + position), coloured by class (first frame red, head orange, tail blue, interior
    grey), with latent-frame boundaries as vertical lines numbered below.

    values, classes: [T, P]; positions: [P] in-frame token index of each kept column.
    Layout: title band 30 px, plot area from x=70 to width-16, frame numbers and axis label
    in the 44 px under it; legend at the top right; ``y_label`` (what a value is) above the plot
    area, which then starts at 46 px.
    ``notes``: a list that receives the figure's texts.
    """
    width, height = size
    img, labels, left, top, pw, ph = _chart(size, 46 if y_label else 30)
    t, hh, ww = (int(g) for g in grid)
    n = t * hh * ww
    idx = (np.arange(t)[:, None] * hh * ww + np.asarray(positions)[None, :]).reshape(-1)
    vals = np.asarray(values, dtype=np.float64).reshape(-1)
    cls = np.asarray(classes).reshape(-1)
    scale = Scale(vals, log=log)
    _y_axis(img, labels, scale, left, top, pw, ph)
    _frame_axis(img, labels, grid, left, top, pw, ph)
    xs = left + (idx + 0.5) / n * pw
    ys = top + ph - 1 - scale(vals) * (ph - 1)
    ok = np.isfinite(ys)
    dot = 1 if ok.sum() > pw * 2 else (2 if ok.sum() > pw // 2 else 3)
    for c in DRAW_ORDER:
        m = ok & (cls == c)
        _dots(img, xs[m], ys[m], CLASS_COLOURS[c], dot)
    labels.add(8, 8, title)
    _legend(img, labels, width - 16, [(CLASS_NAMES[c], CLASS_COLOURS[c]) for c in
                                      (TokenClass.INTERIOR, TokenClass.TAIL, TokenClass.HEAD, TokenClass.FIRST_FRAME)])
    labels.add(left + pw / 2, height - 6, "token index (latent frame numbers; lines = frame boundaries)"
               + (", log scale" if log else ""), ha="m", va="b", size=11)
    if y_label:
        labels.add(left, top - 4, y_label, ha="l", va="b", size=11)
    return labels.render(img, notes)


def frame_heatmaps_image(values: np.ndarray, title: str = "", log: bool = False, max_cols: int = 8,
                         tile: int = 160, notes: Optional[List[str]] = None) -> np.ndarray:
    """One heatmap per latent frame (kept rows x kept columns of H' x W'), tiles left to right
    in rows of ``max_cols``, frame number above each tile, one shared colour scale with a
    colour bar on the right.  values: [T, R, C] (NaN = not recorded, drawn grey)."""
    v = np.asarray(values, dtype=np.float64)
    t, r, c = v.shape
    cell = max(1, min(24, tile // max(r, c)))
    th, tw = r * cell, c * cell
    cols = min(t, max_cols)
    rows = -(-t // cols)
    gap, head, top, left, bar = 10, 16, 30, 10, 76
    width = left + cols * tw + (cols - 1) * gap + 20 + bar
    height = top + rows * (head + th) + (rows - 1) * gap + 10
    width, height = max(width, 360), max(height, 120)
    img = np.empty((height, width, 3), dtype=np.float32)
    img[:] = BG
    labels = Labels()
    scale = Scale(v, log=log)
    rgb = colormap(scale(v))
    for i in range(t):
        rr, cc = divmod(i, cols)
        y0 = top + rr * (head + th + gap) + head
        x0 = left + cc * (tw + gap)
        img[y0:y0 + th, x0:x0 + tw] = np.repeat(np.repeat(rgb[i], cell, axis=0), cell, axis=1)
        labels.add(x0, y0 - 3, f"t={i}", va="b", size=11)
    # colour bar
    bx = width - bar + 6
    by0, by1 = top + head, height - 12
    ramp = colormap(np.linspace(1, 0, max(2, by1 - by0)))
    img[by0:by1, bx:bx + 12] = ramp[:, None, :]
    labels.add(bx + 15, by0, _fmt(scale.hi), va="m", size=10)
    labels.add(bx + 15, by1, _fmt(scale.lo), va="m", size=10)
    labels.add(8, 8, title)
    return labels.render(img, notes)


def hierarchy_image(matrix: np.ndarray, blocks: Sequence[int], steps: Sequence[int], title: str = "",
                    log: bool = True, scale_values: Optional[np.ndarray] = None, steered_blocks: Sequence[int] = (),
                    footnotes: Sequence[str] = (), notes: Optional[List[str]] = None) -> np.ndarray:
    """Block x step summary: three panels (first frame, boundary, interior), each a grid of
    cells (rows = recorded blocks, columns = recorded steps) coloured by the group's mean MA
    magnitude on one shared (log) colour scale; colour bar on the right.  matrix: [3, nb, ns].
    ``scale_values``: values the colour scale spans instead of the matrix's own (so that figures
    of two runs, drawn on the same values, can be compared by eye).  ``steered_blocks`` are marked
    "*" with a note on the residual stream; ``footnotes`` (e.g. the channels shown) are printed
    under the figure, wrapped to its width; ``notes`` receives the figure's texts."""
    m = np.asarray(matrix, dtype=np.float64)
    _, nb, ns = m.shape
    cw = max(4, min(28, 300 // max(1, ns)))
    ch = max(4, min(28, 240 // max(1, nb)))
    pw, ph = ns * cw, nb * ch
    left, top, gap, bar = 64, 48, 24, 70
    width = max(left + 3 * pw + 2 * gap + bar, 420)
    steered = [b for b in blocks if b in set(steered_blocks)]
    notes_text = list(footnotes)
    if steered:
        notes_text.append(f"* block {', '.join(map(str, steered))}: steered by STAS. The blocks after it carry the "
                          "steered values on (the residual stream), so they change as much.")
    lines = [ln for text in notes_text for ln in _wrap(text, max(40, (width - 16) // 6))]
    height = top + ph + 40 + 15 * len(lines)
    img = np.empty((height, width, 3), dtype=np.float32)
    img[:] = BG
    labels = Labels()
    scale = Scale(m if scale_values is None else scale_values, log=log)
    rgb = colormap(np.clip(scale(m), 0.0, 1.0))
    names = ("first frame", "boundary", "interior")
    for g in range(3):
        x0 = left + g * (pw + gap)
        img[top:top + ph, x0:x0 + pw] = np.repeat(np.repeat(rgb[g], ch, axis=0), cw, axis=1)
        labels.add(x0 + pw / 2, top - 6, names[g], ha="m", va="b", size=12)
        every = max(1, math.ceil(ns * 22 / max(pw, 1)))
        for j, s in enumerate(steps):
            if j % every == 0:
                labels.add(x0 + (j + 0.5) * cw, top + ph + 4, str(s), ha="m", size=10)
    every = max(1, math.ceil(nb * 14 / max(ph, 1)))
    for i, b in enumerate(blocks):
        if i % every == 0:
            labels.add(left - 6, top + (i + 0.5) * ch, f"block {b}" + (" *" if b in steered else ""),
                       ha="r", va="m", size=10)
    labels.add(left + (3 * pw + 2 * gap) / 2, top + ph + 36, "denoising step", ha="m", va="b", size=11)
    for k, ln in enumerate(lines):
        labels.add(8, top + ph + 42 + 15 * k, ln, size=10)
    bx = width - bar + 10
    ramp = colormap(np.linspace(1, 0, max(2, ph)))
    img[top:top + ph, bx:bx + 12] = ramp[:, None, :]
    labels.add(bx + 15, top, _fmt(scale.hi), va="m", size=10)
    labels.add(bx + 15, top + ph, _fmt(scale.lo), va="m", size=10)
    labels.add(8, 8, title)
    return labels.render(img, notes)


def hierarchy_comparison_image(runs: Sequence[Tuple[str, np.ndarray, Sequence[int], Sequence[int]]],
                               log: bool = True) -> np.ndarray:
    """Hierarchy figures of several runs (label, matrix, blocks, steps) stacked, on ONE colour
    scale spanning all of them: the same colour means the same magnitude in every panel."""
    shared = np.concatenate([np.asarray(m, dtype=np.float64).reshape(-1) for _, m, _, _ in runs])
    imgs = [hierarchy_image(m, b, s, f"{label} (colour scale shared by all panels)", log=log, scale_values=shared)
            for label, m, b, s in runs]
    width = max(i.shape[1] for i in imgs)
    out = np.empty((sum(i.shape[0] for i in imgs), width, 3), dtype=np.float32)
    out[:] = BG
    y = 0
    for i in imgs:
        out[y:y + i.shape[0], :i.shape[1]] = i
        y += i.shape[0]
    return out


def steering_image(token_idx: Optional[np.ndarray], before: Optional[np.ndarray], after: Optional[np.ndarray],
                   channels: Sequence[int], grid, title: str = "", message: str = "",
                   size: Tuple[int, int] = (1024, 220), notes: Optional[List[str]] = None) -> np.ndarray:
    """Before vs after steering at the steered tokens: one panel per STAS channel (at most 4),
    x = token index over the whole video (frame lines as in the profile), y = |h|; grey dots
    before, red dots after.  Without data, a panel that says ``message``."""
    width, ph_total = size
    if token_idx is None or before is None or len(token_idx) == 0:
        img = np.empty((120, width, 3), dtype=np.float32)
        img[:] = BG
        labels = Labels()
        labels.add(8, 8, title)
        labels.add(width / 2, 70, message or "no STAS steering recorded", ha="m", va="m", size=14)
        return labels.render(img, notes)
    ks = min(4, before.shape[1])
    left, right, top, bottom, gap = 70, 16, 44, 44, 22
    ph = ph_total - 60
    height = top + ks * ph + (ks - 1) * gap + bottom
    img = np.empty((height, width, 3), dtype=np.float32)
    img[:] = BG
    labels = Labels()
    pw = width - left - right
    t, hh, ww = (int(g) for g in grid)
    n = t * hh * ww
    xs = left + (np.asarray(token_idx) + 0.5) / n * pw
    for k in range(ks):
        y0 = top + k * (ph + gap)
        _fill(img, y0, y0 + ph, left, left + pw, PANEL)
        b, a = np.abs(before[:, k]), np.abs(after[:, k])
        scale = Scale(np.concatenate([b, a]))
        _y_axis(img, labels, scale, left, y0, pw, ph)
        _frame_axis(img, Labels() if k < ks - 1 else labels, grid, left, y0, pw, ph)
        dot = 2 if len(xs) < pw else 1
        _dots(img, xs, y0 + ph - 1 - scale(b) * (ph - 1), BEFORE_C, dot)
        _dots(img, xs, y0 + ph - 1 - scale(a) * (ph - 1), AFTER_C, dot)
        labels.add(left, y0 - 3, f"channel {int(channels[k])}", va="b", size=11)
    labels.add(8, 8, title)
    x = width - right - 150
    _fill(img, 12, 20, x, x + 8, BEFORE_C)
    labels.add(x + 12, 16, "before", va="m", size=11)
    _fill(img, 12, 20, x + 70, x + 78, AFTER_C)
    labels.add(x + 82, 16, "after", va="m", size=11)
    labels.add(left + pw / 2, height - 6, "token index of steered tokens (|h|, latent frame numbers below)",
               ha="m", va="b", size=11)
    return labels.render(img, notes)


# ---------------------------------------------------------------------------------------------
# Temporal Seam Meter chart.
# ---------------------------------------------------------------------------------------------

SERIES_COLOURS = (np.array([0.35, 0.75, 1.00], dtype=np.float32), np.array([1.00, 0.62, 0.10], dtype=np.float32))
SEAM_C = np.array([0.30, 0.30, 0.34], dtype=np.float32)
FLAG_C = np.array([1.00, 0.25, 0.35], dtype=np.float32)


def _line(img: np.ndarray, xs: np.ndarray, ys: np.ndarray, colour, width: int = 2) -> None:
    """Polyline through (xs, ys), drawn as dots one pixel apart."""
    for k in range(len(xs) - 1):
        n = int(max(abs(xs[k + 1] - xs[k]), abs(ys[k + 1] - ys[k]), 1)) + 1
        t = np.linspace(0.0, 1.0, n)
        _dots(img, xs[k] + t * (xs[k + 1] - xs[k]), ys[k] + t * (ys[k + 1] - ys[k]), colour, width)


def seam_curve_image(values: np.ndarray, is_seam: np.ndarray, flagged: np.ndarray, names: Sequence[str],
                     title: str = "", size: Tuple[int, int] = (1024, 360)) -> np.ndarray:
    """Per frame pair difference of one or two videos on one shared scale: x = pair i (frames
    i and i+1), a grey column at every VAE chunk seam, seam pairs as larger dots, seams that
    stand out from their chunks ringed in red.  values, flagged: [R, P]; is_seam: [P]."""
    vals = np.atleast_2d(np.asarray(values, dtype=np.float64))
    flags = np.atleast_2d(np.asarray(flagged, dtype=bool))
    seam = np.asarray(is_seam, dtype=bool)
    nser, p = vals.shape
    width, height = size
    img, labels, left, top, pw, ph = _chart(size, 34)
    scale = Scale(vals)
    _y_axis(img, labels, scale, left, top, pw, ph)
    xs = left + (np.arange(p) + 0.5) / p * pw
    col_w = max(1, int(pw / p * 0.6))
    for i in np.nonzero(seam)[0]:
        _fill(img, top, top + ph, int(xs[i] - col_w / 2), int(xs[i] - col_w / 2) + col_w, SEAM_C)
    every = max(1, math.ceil(p / max(1, pw // 36)))
    for i in range(0, p + 1, every):
        labels.add(left + i / p * pw, top + ph + 4, str(i), ha="m", size=11)
    for k in range(nser):
        ys = top + ph - 1 - scale(vals[k]) * (ph - 1)
        c = SERIES_COLOURS[k % len(SERIES_COLOURS)]
        _line(img, xs, ys, c, 2)
        _dots(img, xs[seam], ys[seam], c, 6)
        for i in np.nonzero(flags[k])[0]:  # red ring around seams that stand out
            ang = np.linspace(0, 2 * np.pi, 40)
            _dots(img, xs[i] + 7 * np.cos(ang), ys[i] + 7 * np.sin(ang), FLAG_C, 2)
    labels.add(8, 8, title)
    _legend(img, labels, width - 16, [(names[k] if k < len(names) else f"series {k}",
                                       SERIES_COLOURS[k % len(SERIES_COLOURS)]) for k in reversed(range(nser))])
    labels.add(left + pw / 2, height - 6, "frame (pair i = frames i, i+1); grey columns = VAE chunk seams, "
               "red rings = seams standing out", ha="m", va="b", size=11)
    return labels.render(img)
