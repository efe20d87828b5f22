"""STAS Sweep's arithmetic: the grid of settings, the scores of a decoded video, the guards and the
pick. No ComfyUI here: nodes/sweep.py renders, this module judges. docs/sweep.md says what the score
measures and what it does not.

Score of a render (lower is better; the unpatched baseline scores exactly 1):

    score = 0.5 * seam_ratio / baseline seam_ratio + 0.5 * flicker / baseline flicker

* seam_ratio: the Temporal Seam Meter's figure (mean frame difference across the VAE's chunk seams over
  the mean inside the chunks, after global-motion alignment; 1 = seams invisible);
* flicker: mean absolute difference of consecutive frames at full resolution (what VBench's temporal
  flickering score is one minus, on 0..1 pixels).

Guards: a render whose motion (mean absolute difference of frames one VAE chunk apart) or sharpness
(mean absolute Laplacian of luma) falls more than ``tolerance`` below the baseline's is disqualified: it
would win by freezing or blurring the video. A variant whose window steers no step of the run is flagged
and never wins. The winner is the qualified variant of least score, ties to the smaller change (fewer
steered steps, then fewer blocks, then smaller alpha); none wins unless it scores below 1.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from . import seams

MAX_VARIANTS = 16
LUMA = seams.LUMA


@dataclass(frozen=True)
class Variant:
    """One setting of the grid: STAS Model Patch's alpha, blocks and window (the rest at the node's defaults)."""
    alpha: float
    blocks: str
    start: float
    end: float

    def label(self) -> str:
        return f"alpha {self.alpha:g}, blocks {self.blocks}, window {self.start:g}-{self.end:g}"


def parse_floats(text: str, name: str) -> List[float]:
    """'0.5, 1.0' -> [0.5, 1.0] (each once, in the order given)."""
    out: List[float] = []
    for part in str(text).replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            raise ValueError(f"{name}: {part!r} is not a number; write a list like '0.5, 1.0'.") from None
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{name}: {part!r} must be a number >= 0.")
        if v not in out:
            out.append(v)
    if not out:
        raise ValueError(f"{name}: the list is empty; write at least one value, e.g. '1.0'.")
    return out


def parse_blocks_list(text: str) -> List[str]:
    """'middle; 10-20' -> ['middle', '10-20']: block choices as STAS Model Patch reads them, split by ';'."""
    out = []
    for part in str(text).split(";"):
        part = part.strip()
        if part and part not in out:
            out.append(part)
    if not out:
        raise ValueError("blocks: the list is empty; write block choices separated by ';', e.g. 'middle; 10-20'.")
    return out


def parse_windows(text: str) -> List[Tuple[float, float]]:
    """'0-0.2, 0-0.4' -> [(0.0, 0.2), (0.0, 0.4)]: (start_percent, end_percent) pairs."""
    out: List[Tuple[float, float]] = []
    for part in str(text).replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        a, sep, b = part.partition("-")
        try:
            w = (float(a), float(b)) if sep else (math.nan, math.nan)
        except ValueError:
            w = (math.nan, math.nan)
        if not (0.0 <= w[0] < w[1] <= 1.0):
            raise ValueError(f"windows: {part!r} is not a window 'start-end' with 0 <= start < end <= 1; "
                             "write a list like '0-0.2, 0-0.4'.")
        if w not in out:
            out.append(w)
    if not out:
        raise ValueError("windows: the list is empty; write windows like '0-0.2, 0-0.4'.")
    return out


def grid(alphas: Sequence[float], blocks: Sequence[str], windows: Sequence[Tuple[float, float]],
         limit: int = MAX_VARIANTS) -> List[Variant]:
    """Every combination, alpha slowest; at most ``limit`` of them."""
    out = [Variant(a, b, s, e) for a, b, (s, e) in itertools.product(alphas, blocks, windows)]
    if len(out) > limit:
        raise ValueError(f"{len(alphas)} alphas x {len(blocks)} block choices x {len(windows)} windows make "
                         f"{len(out)} variants, more than {limit}; remove some values from the lists.")
    return out


# -- scores ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scores:
    seam_ratio: float
    flicker: float      # mean |consecutive frame difference|, 0..1 pixels
    motion: float       # mean |difference of frames one chunk apart|
    sharpness: float    # mean |Laplacian| of luma


def measure(frames: torch.Tensor, temporal_compression: int, causal_first_frame: bool = True) -> Scores:
    """Scores of one decoded video: float [frames, H, W, C>=3] in 0..1 (ComfyUI's IMAGE layout)."""
    rep = seams.measure(frames, seams.SeamOptions(temporal_compression=int(temporal_compression),
                                                  causal_first_frame=bool(causal_first_frame)))
    rgb = frames[..., :3].float()
    k = min(int(temporal_compression), len(rgb) - 1)
    motion = float((rgb[k:] - rgb[:-k]).abs().mean())
    luma = torch.einsum("nhwc,c->nhw", rgb, torch.tensor(LUMA, dtype=rgb.dtype, device=rgb.device))[:, None]
    lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=rgb.dtype, device=rgb.device)
    sharp = float(F.conv2d(luma, lap[None, None]).abs().mean())
    return Scores(float(rep.seam_ratio), float(rep.raw_mae.mean()), motion, sharp)


def _rel(v: float, base: float) -> float:
    return v / base if base > 0 else (1.0 if v <= 0 else math.inf)


def score(s: Scores, base: Scores) -> float:
    """The documented score: 0.5 * relative seam ratio + 0.5 * relative flicker (the baseline scores 1)."""
    return 0.5 * _rel(s.seam_ratio, base.seam_ratio) + 0.5 * _rel(s.flicker, base.flicker)


def disqualified(s: Scores, base: Scores, tolerance: float) -> Optional[str]:
    """Why ``s`` may not win (it froze or blurred the video beyond ``tolerance``), or None."""
    why = []
    if s.motion < (1.0 - tolerance) * base.motion:
        why.append(f"froze: motion {100 * (_rel(s.motion, base.motion) - 1):+.0f}%")
    if s.sharpness < (1.0 - tolerance) * base.sharpness:
        why.append(f"blurred: sharpness {100 * (_rel(s.sharpness, base.sharpness) - 1):+.0f}%")
    return "; ".join(why) or None


@dataclass
class Result:
    variant: Variant
    steered_steps: int
    n_blocks: int
    scores: Optional[Scores] = None
    score: float = math.nan
    flag: Optional[str] = None     # why it cannot win: no steered step, froze, blurred

    def change(self) -> Tuple[int, int, float]:
        """How far from the baseline: steered steps, then blocks, then alpha (ties go to the smaller)."""
        return self.steered_steps, self.n_blocks, self.variant.alpha


def assess(r: Result, base: Scores, tolerance: float) -> None:
    """Fill in a scored result's score and, unless it is flagged already, why it may not win."""
    if r.scores is None:
        return
    r.score = score(r.scores, base)
    if r.flag is None:
        r.flag = disqualified(r.scores, base, tolerance)


def beats(r: Result, other: Optional[Result]) -> bool:
    """``r`` may win (qualified, below the baseline's 1) and ranks before ``other`` (None: no candidate yet):
    the least score, ties to the smaller change."""
    if r.flag is not None or r.scores is None or not r.score < 1.0:
        return False
    return other is None or (r.score, r.change()) < (other.score, other.change())


def judge(results: Sequence[Result], base: Scores, tolerance: float) -> Optional[int]:
    """Assess every result; the index of the winner, or None when no qualified variant scores below 1."""
    best = None
    for i, r in enumerate(results):
        assess(r, base, tolerance)
        if beats(r, None if best is None else results[best]):
            best = i
    return best


def table(base: Scores, results: Sequence[Result], winner: Optional[int], tolerance: float) -> str:
    """The variants and their scores as text, baseline first; the winner marked."""
    head = f"{'':2}{'variant':<48} {'score':>6} {'seam':>6} {'flicker':>8} {'motion':>7} {'sharp':>7}  note"
    rows = [head, f"{'':2}{'unpatched baseline':<48} {1.0:>6.4f} {base.seam_ratio:>6.3f} {base.flicker:>8.4f} "
                  f"{base.motion:>7.4f} {base.sharpness:>7.4f}"]
    for i, r in enumerate(results):
        mark = "* " if i == winner else "  "
        s = r.scores
        nums = (f"{r.score:>6.4f} {s.seam_ratio:>6.3f} {s.flicker:>8.4f} {s.motion:>7.4f} {s.sharpness:>7.4f}"
                if s is not None else f"{'':>6} {'':>6} {'':>8} {'':>7} {'':>7}")
        rows.append(f"{mark}{r.variant.label():<48} {nums}  {r.flag or ''}".rstrip())
    verdict = (f"Winner (*): {results[winner].variant.label()}, score {results[winner].score:.4f} "
               f"(baseline 1.000)." if winner is not None else
               "No variant scored below the unpatched baseline: the MODEL output is the input, unpatched.")
    return "\n".join(rows + ["", verdict,
                             f"score = 0.5 seam ratio + 0.5 flicker, each over the baseline's; lower is better. "
                             f"Motion or sharpness more than {tolerance:.0%} below the baseline disqualifies."])
