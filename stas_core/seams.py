"""Temporal seam meter: how much a decoded video changes across the chunk seams of its video VAE
(between pixel frames ck and ck+1), against the within-chunk pairs of the neighbouring chunks,
after global-motion alignment; plus a VBench-style temporal flickering score."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

FLOOR = 0.5 / 255.0
"""Additive floor of every ratio: half an 8-bit step, a difference no 8-bit video can show."""
LUMA = (0.299, 0.587, 0.114)
BLOCK = 4
"""Frames processed at once at full resolution (bounds the temporaries to a few frames)."""


@dataclass(frozen=True)
class SeamOptions:
    temporal_compression: int = 4
    causal_first_frame: bool = True
    flag_contrast: float = 1.5
    motion_compensation: bool = True
    analysis_size: int = 320


@dataclass(frozen=True)
class SeamLayout:
    """Which consecutive pixel-frame pairs cross a VAE chunk seam.  Pair i = frames (i, i+1)."""
    frames: int
    temporal_compression: int
    causal_first_frame: bool

    @property
    def is_seam(self) -> np.ndarray:
        i = np.arange(self.frames - 1)
        c = self.temporal_compression
        return (i % c == 0) if self.causal_first_frame else ((i + 1) % c == 0)

    @property
    def chunks(self) -> int:
        return int(self.is_seam.sum()) + 1


def seam_layout(frames: int, temporal_compression: int = 4, causal_first_frame: bool = True) -> SeamLayout:
    """Validate that ``frames`` pixel frames are what the VAE decodes, and locate the seams."""
    c = int(temporal_compression)
    if c < 2:
        raise ValueError(f"temporal_compression must be at least 2 (got {c}): with 1 every pair is a seam and "
                         "there are no within-chunk pairs to compare with. Wan, HunyuanVideo and CogVideoX use 4.")
    n = int(frames)
    if causal_first_frame:
        need, fits = 1 + c, (n - 1) % c == 0
        shape = f"1 + {c}k frames"
        near = sorted({max(need, 1 + c * ((n - 1) // c)), 1 + c * (-(-(n - 1) // c))})
    else:
        need, fits = 2 * c, n % c == 0
        shape = f"{c}k frames"
        near = sorted({max(need, c * (n // c)), c * (-(-n // c))})
    if n < need:
        raise ValueError(f"{n} frame(s) hold no chunk seam: with temporal_compression {c} and causal_first_frame "
                         f"{'on' if causal_first_frame else 'off'} at least {need} frames are needed "
                         "(one seam and the within-chunk pairs to compare it with). Decode a longer video.")
    if not fits:
        hint = " or a batch of several videos" if n > 2 * need else ""
        raise ValueError(f"{n} frames do not fit temporal_compression {c} with causal_first_frame "
                         f"{'on' if causal_first_frame else 'off'}: the VAE decodes {shape} (nearest: "
                         f"{' or '.join(map(str, near))}). Connect the VAE Decode output itself (not a trimmed, "
                         f"interpolated{hint} video), or set temporal_compression / causal_first_frame to your VAE.")
    return SeamLayout(n, c, bool(causal_first_frame))


@dataclass
class SeamReport:
    """What the meter found in one video.  Arrays are per pair (length frames - 1) or per seam."""
    layout: SeamLayout
    size: Tuple[int, int]             # full-resolution (height, width)
    analysis: Tuple[int, int]         # (height, width) the robust difference was computed at
    diff: np.ndarray                  # robust difference per pair (mean |RGB| after global shift)
    raw_mae: np.ndarray               # plain mean |RGB difference| per pair at full resolution
    shifts: np.ndarray                # [P, 2] global (dy, dx) per pair, in full-resolution pixels
    seam_pairs: np.ndarray            # pair index of every seam
    contrast: np.ndarray              # per seam: its difference / median of neighbouring within pairs
    flagged: np.ndarray               # per seam: contrast >= flag_contrast
    seam_mean: float
    within_mean: float
    seam_ratio: float
    flicker: float                    # VBench-style temporal flickering: 1 - mean raw_mae
    outlier_pair: int                 # the within-chunk pair that stands out most from its neighbours
    outlier_contrast: float
    flag_contrast: float


def _slices(d: int, n: int):
    """Overlap of b[y] with a[y - d] along an axis of length n: (slice of b, slice of a)."""
    return (slice(d, n), slice(0, n - d)) if d >= 0 else (slice(0, n + d), slice(-d, n))


def _mad_at(a: torch.Tensor, b: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Per pair p: mean |b[p](y, x) - a[p](y - dy, x - dx)| over the overlap, (dy, dx) = shift[p].

    a, b: [P, C, H, W]; shift [P, 2]: long (exact pixels) or float (bilinear).  One batched
    grid_sample for all pairs whatever their shifts, so the cost does not depend on the content."""
    n, c, h, w = a.shape
    if not shift.is_floating_point():
        groups = torch.unique(shift, dim=0)
        if len(groups) <= 8:  # the usual case (still camera, steady pan): plain slices, no resampling
            out = torch.empty(n, dtype=a.dtype, device=a.device)
            for dy, dx in groups.tolist():
                by, ay = _slices(dy, h)
                bx, ax = _slices(dx, w)
                idx = (shift == torch.tensor([dy, dx], device=shift.device)).all(1).nonzero()[:, 0]
                pa, pb = (a, b) if len(idx) == n else (a[idx], b[idx])
                out[idx] = (pb[..., by, bx] - pa[..., ay, ax]).abs().flatten(1).mean(1)
            return out
    sh = shift.to(a.dtype)
    ys = torch.arange(h, device=a.device, dtype=a.dtype)[None] - sh[:, :1]  # [P, H]: source row in a
    xs = torch.arange(w, device=a.device, dtype=a.dtype)[None] - sh[:, 1:]
    grid = torch.empty(n, h, w, 2, dtype=a.dtype, device=a.device)  # (x, y) in -1..1, align_corners
    grid[..., 0] = (2 * xs / max(w - 1, 1) - 1)[:, None, :]
    grid[..., 1] = (2 * ys / max(h - 1, 1) - 1)[:, :, None]
    moved = F.grid_sample(a, grid, mode="bilinear" if shift.is_floating_point() else "nearest",
                          padding_mode="zeros", align_corners=True)
    valid = (((ys >= 0) & (ys <= h - 1))[:, :, None] & ((xs >= 0) & (xs <= w - 1))[:, None, :]).to(a.dtype)
    err = (moved - b).abs_().sum(1) * valid
    return err.sum((1, 2)) / (valid.sum((1, 2)) * c).clamp_min(1)


def _global_shifts(luma: torch.Tensor) -> torch.Tensor:
    """Phase-correlation translation (dy, dx) of each frame relative to the previous one,
    at most a quarter of the frame, long [N-1, 2]; luma [N, H, W]."""
    n, h, w = luma.shape
    win = torch.outer(torch.hann_window(h, periodic=False, dtype=luma.dtype, device=luma.device),
                      torch.hann_window(w, periodic=False, dtype=luma.dtype, device=luma.device))
    z = (luma - luma.mean(dim=(1, 2), keepdim=True)) * win
    spec = torch.fft.rfft2(z)
    cross = spec[1:] * spec[:-1].conj()
    mag = cross.abs()
    # regularized whitening: full phase correlation fails on sparse spectra (few dominant textures)
    cross = cross / (mag + 0.1 * mag.amax(dim=(1, 2), keepdim=True).clamp_min(1e-20))
    corr = torch.fft.irfft2(cross, s=(h, w))  # peak at (dy, dx) where frame i+1 ~ frame i moved by (dy, dx)
    dy = torch.fft.fftfreq(h, 1.0 / h, device=luma.device).round().long()
    dx = torch.fft.fftfreq(w, 1.0 / w, device=luma.device).round().long()
    far = (dy.abs()[:, None] > h // 4) | (dx.abs()[None, :] > w // 4)
    corr = corr.masked_fill(far, float("-inf"))
    best = corr.reshape(n - 1, -1).argmax(dim=1)
    return torch.stack([dy[best // w], dx[best % w]], 1)


_STEPS = ((-1, 0), (1, 0), (0, -1), (0, 1))


def _best_shifts(luma: torch.Tensor, peaks: torch.Tensor) -> torch.Tensor:
    """Per pair, whichever of no shift, the correlation peak and its 4 neighbours gives the
    smallest luma difference (the peak is only a candidate: flat or noisy frames have a
    meaningless one), refined to sub-pixel by equiangular (V-shape) fitting of the difference
    at +-1 px on each axis, exact for the |error| cost near its minimum; float [P, 2].
    Sub-pixel matters: a 3 px/frame pan at 1280 wide is 0.75 px at the analysis size.
    luma [N, 1, H, W]; peaks long [P, 2]."""
    a, b = luma[:-1], luma[1:]
    steps = torch.tensor(_STEPS, device=peaks.device)
    rows = torch.arange(len(peaks), device=peaks.device)
    cands = torch.cat([torch.zeros_like(peaks)[:, None], peaks[:, None], peaks[:, None] + steps[None]], 1)  # [P, 6, 2]
    cost = torch.stack([_mad_at(a, b, cands[:, k]) for k in range(cands.shape[1])], 1)
    pick = cost.argmin(1)
    best = cands[rows, pick]
    c0 = cost[rows, pick]
    out = best.to(luma.dtype)
    around = torch.stack([_mad_at(a, b, best + steps[k]) for k in range(4)], 1)  # [P, 4]: -y, +y, -x, +x
    for axis in (0, 1):
        lo, hi = around[:, 2 * axis], around[:, 2 * axis + 1]
        den = 2 * (torch.maximum(lo, hi) - c0)
        off = torch.where(den > 0, (lo - hi) / den.clamp_min(1e-12), torch.zeros_like(den)).clamp(-0.5, 0.5)
        moving = (best != 0).any(1) | (off.abs() > 0.25)  # a still camera stays exactly still
        out[:, axis] += torch.where(moving, off, torch.zeros_like(off))
    return out


def _neighbour_median(values: np.ndarray, i: int, pool: np.ndarray, reach: int) -> float:
    """Median of ``values`` at the pairs of ``pool`` within ``reach`` of pair i (i itself excluded)."""
    idx = np.nonzero(pool)[0]
    idx = idx[(np.abs(idx - i) <= reach) & (idx != i)]
    return float(np.median(values[idx])) if idx.size else float("nan")


def _ratio(a: float, b: float) -> float:
    return (a + FLOOR) / (b + FLOOR)


@torch.no_grad()
def measure(video: torch.Tensor, opts: SeamOptions = SeamOptions()) -> SeamReport:
    """Measure one video: float [frames, H, W, C>=3] in 0..1 (ComfyUI's IMAGE layout).

    Reads the video once at full resolution, a few frames at a time; the only whole-video
    buffer it allocates is the area-averaged analysis copy (1/q^2 of the video)."""
    if video.ndim != 4 or video.shape[-1] < 3:
        raise ValueError(f"expected video frames [frames, height, width, 3], got shape {list(video.shape)}.")
    n, h, w = (int(s) for s in video.shape[:3])
    lay = seam_layout(n, opts.temporal_compression, opts.causal_first_frame)
    q = max(1, math.ceil(max(h, w) / max(1, int(opts.analysis_size))))
    hq, wq = h // q, w // q
    pool = torch.zeros(q * 3, 3, dtype=torch.float32, device=video.device)
    for k in range(q):  # [.., q*3] -> [.., 3]: the mean over q columns, as a tiny matmul
        pool[k * 3:(k + 1) * 3] = torch.eye(3) / (q * q)
    small, raw = [], []
    buf = None
    for s in range(0, n, BLOCK):
        blk = video[s:s + BLOCK + 1, :, :, :3].float()  # one frame of overlap; a view for float32 input
        k = len(blk) - 1
        if k:
            if buf is None:
                buf = torch.empty_like(blk[1:])  # reused: no fresh pages per block
            d = torch.sub(blk[1:], blk[:-1], out=buf[:k])
            raw.append(torch.linalg.vector_norm(d, ord=1, dim=(1, 2, 3)) / d[0].numel())
        x = blk[:BLOCK, :hq * q, :wq * q]  # area average over q x q pixels: rows by a strided sum, columns by matmul
        rows = x.reshape(len(x), hq, q, wq * q * 3).sum(2)
        small.append((rows.view(len(x), hq, wq, q * 3) @ pool).permute(0, 3, 1, 2))
    raw_mae = torch.cat(raw).double().cpu().numpy()
    rgb = torch.cat(small)  # [N, 3, h', w']: the one whole-video buffer, 1/q^2 of the video
    luma = torch.einsum("nchw,c->nhw", rgb, torch.tensor(LUMA, dtype=rgb.dtype, device=rgb.device))[:, None]
    sh, sw = hq, wq
    shifts = torch.zeros(n - 1, 2, dtype=rgb.dtype, device=rgb.device)
    if opts.motion_compensation and min(sh, sw) >= 8:
        shifts = _best_shifts(luma, _global_shifts(luma[:, 0]))
    diff = _mad_at(rgb[:-1], rgb[1:], shifts).double().cpu().numpy()
    used = shifts.double().cpu().numpy() * q
    return _report(lay, (h, w), (sh, sw), diff, raw_mae, used, opts.flag_contrast)


def _report(lay: SeamLayout, size, analysis, diff: np.ndarray, raw_mae: np.ndarray, shifts: np.ndarray,
            flag_contrast: float) -> SeamReport:
    is_seam = lay.is_seam
    within = ~is_seam
    reach = lay.temporal_compression - 1  # the within pairs of the two chunks either side
    seam_pairs = np.nonzero(is_seam)[0]
    contrast = np.array([_ratio(diff[p], _neighbour_median(diff, p, within, reach)) for p in seam_pairs])
    wi = np.nonzero(within)[0]
    wc = np.array([_ratio(diff[i], _neighbour_median(diff, i, within, reach)) for i in wi])
    wc = np.where(np.isnan(wc), 1.0, wc)  # a chunk whose within pairs have no neighbour: nothing to compare
    k = int(np.argmax(wc)) if wc.size else 0
    seam_mean, within_mean = float(diff[is_seam].mean()), float(diff[within].mean())
    return SeamReport(
        layout=lay, size=tuple(size), analysis=tuple(analysis), diff=diff, raw_mae=raw_mae, shifts=shifts,
        seam_pairs=seam_pairs, contrast=contrast, flagged=contrast >= flag_contrast,
        seam_mean=seam_mean, within_mean=within_mean, seam_ratio=_ratio(seam_mean, within_mean),
        flicker=float(1.0 - raw_mae.mean()), outlier_pair=int(wi[k]) if wi.size else -1,
        outlier_contrast=float(wc[k]) if wc.size else float("nan"), flag_contrast=float(flag_contrast))


# -- words ---------------------------------------------------------------------------------------

def _pair(i: int) -> str:
    return f"{i}|{i + 1}"


def describe(r: SeamReport, name: str = "A") -> List[str]:
    """The numbers of one report, a line each."""
    lay = r.layout
    s = len(r.seam_pairs)
    lines = [
        f"{name}: seam ratio {r.seam_ratio:.3f} (mean difference at seam pairs {r.seam_mean:.4f} / within chunks "
        f"{r.within_mean:.4f})",
    ]
    fl = [f"{_pair(p)} ({c:.2f}x)" for p, c, f in zip(r.seam_pairs, r.contrast, r.flagged) if f]
    lines.append(f"  seams standing out (contrast >= {r.flag_contrast:g}): {len(fl)} of {s}"
                 + (": " + ", ".join(fl[:12]) + (", ..." if len(fl) > 12 else "") if fl else ""))
    k = int(np.argmax(r.contrast))
    lines.append(f"  per-seam contrast (seam / median of neighbouring within-chunk pairs): median "
                 f"{float(np.median(r.contrast)):.2f}, max {r.contrast[k]:.2f} at {_pair(int(r.seam_pairs[k]))}"
                 + (f"; first-frame seam 0|1: {r.contrast[0]:.2f}" if lay.causal_first_frame else ""))
    if r.outlier_pair >= 0:
        tail = (" - a change inside a chunk (motion, a cut), or a seam elsewhere than this layout expects"
                if r.outlier_contrast >= r.flag_contrast else "")
        lines.append(f"  largest within-chunk change: {_pair(r.outlier_pair)} at {r.outlier_contrast:.2f}x its "
                     f"neighbours{tail}")
    moving = np.abs(r.shifts).max(axis=1) > 0
    if moving.any():
        med = np.median(np.abs(r.shifts[moving]), axis=0)
        lines.append(f"  global motion compensated in {int(moving.sum())} of {len(r.diff)} pairs (median "
                     f"|dy|, |dx| = {med[0]:.1f}, {med[1]:.1f} px)")
    lines.append(f"  temporal flickering (VBench-style, 1 - mean |frame difference|, higher = steadier): "
                 f"{r.flicker:.4f}")
    return lines


def _cmp(a: float, b: float, tol: float, more: str, less: str, same: str) -> str:
    if abs(a - b) <= tol:
        return same
    return more if a > b else less


def compare(a: SeamReport, b: SeamReport) -> List[str]:
    """A - B in plain words."""
    d = a.seam_ratio - b.seam_ratio
    out = [f"A - B: seam ratio {a.seam_ratio:.3f} - {b.seam_ratio:.3f} = {d:+.3f}: "
           + _cmp(a.seam_ratio, b.seam_ratio, 0.02, "A's chunk seams stand out more than B's.",
                  "A's chunk seams stand out less than B's.", "the seams stand out about equally.")]
    smoother = int((a.contrast < b.contrast).sum())
    out.append(f"  per seam: A is smoother than B at {smoother} of {len(a.contrast)} seams; seams standing out: "
               f"A {int(a.flagged.sum())}, B {int(b.flagged.sum())}.")
    f = a.flicker - b.flicker
    out.append(f"  temporal flickering {a.flicker:.4f} - {b.flicker:.4f} = {f:+.4f}: "
               + _cmp(a.flicker, b.flicker, 0.0005, "A flickers less.", "A flickers more.", "about the same."))
    m = a.within_mean - b.within_mean
    out.append(f"  change within chunks {a.within_mean:.4f} - {b.within_mean:.4f} = {m:+.4f}: "
               + _cmp(a.within_mean, b.within_mean, 0.05 * max(a.within_mean, b.within_mean, FLOOR),
                      "A moves or changes more inside chunks.", "A moves or changes less inside chunks.",
                      "about the same motion inside chunks."))
    return out


def summary_text(a: SeamReport, b: Optional[SeamReport] = None) -> str:
    lay = a.layout
    h, w = a.size
    head = (f"Temporal Seam Meter: {lay.frames} frames {w}x{h}, temporal compression {lay.temporal_compression}, "
            f"causal first frame {'on' if lay.causal_first_frame else 'off'}: {len(a.seam_pairs)} seam pairs "
            f"(frames {', '.join(_pair(int(p)) for p in a.seam_pairs[:6])}{', ...' if len(a.seam_pairs) > 6 else ''}), "
            f"{len(a.diff) - len(a.seam_pairs)} within-chunk pairs; robust difference at {a.analysis[1]}x{a.analysis[0]}.")
    lines = [head, ""] + describe(a, "A (images)")
    if b is not None:
        lines += [""] + describe(b, "B (images_b)") + [""] + compare(a, b)
    return "\n".join(lines)


def series_for_plot(reports: Sequence[SeamReport]) -> Tuple[np.ndarray, np.ndarray]:
    """[R, P] robust differences and [R, P] flagged-seam mask, for plot.seam_curve_image."""
    vals = np.stack([r.diff for r in reports])
    flags = np.zeros_like(vals, dtype=bool)
    for k, r in enumerate(reports):
        flags[k, r.seam_pairs[r.flagged]] = True
    return vals, flags
