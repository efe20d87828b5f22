"""Triton kernels of the STAS hot path (imported only where Triton is; see ``steer_fast``): two
launches steer a block (a split max-reduction, then gather-steer-scatter), two more detect auto
channels. Each kernel decides on the device whether it has work. Math: ``steer.steer_samples_``'s.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _row_weight(blend_ptr, sigma_ptr, sigma_numel, r, lo, hi):
    """Blend of sample ``r`` for this call: blend[r] inside the sigma window, else 0."""
    w = tl.load(blend_ptr + r).to(tl.float32)
    s = tl.load(sigma_ptr + r % sigma_numel).to(tl.float32)
    return tl.where((s > lo) & (s <= hi), w, 0.0)


@triton.jit
def _any_row_steered(blend_ptr, sigma_ptr, sigma_numel, n_rows, lo, hi):
    on = tl.full([], 0, tl.int32)
    for r in range(n_rows):
        w = _row_weight(blend_ptr, sigma_ptr, sigma_numel, r, lo, hi)
        on = tl.where(w != 0.0, 1, on)
    return on


@triton.jit
def _steer_reduce_kernel(h_ptr, stride_b, stride_n, stride_d, vis_start, n_vis,
                         chans_ptr, valid_ptr, tab_stride, slot, n_chans,
                         blend_ptr, sigma_ptr, sigma_numel, lo, hi,
                         part_ptr, n_tiles,
                         KP: tl.constexpr, BLOCK_N: tl.constexpr):
    """part[b, tile, k] = max |h[b, vis_start + n, chans[slot, k]]| over this tile's tokens
    (valid channels only: an invalid table entry is never used as an index)."""
    tile = tl.program_id(0)
    b = tl.program_id(1)
    w = _row_weight(blend_ptr, sigma_ptr, sigma_numel, b, lo, hi)
    if w == 0.0:
        return
    kk = tl.arange(0, KP)
    kmask = (kk < n_chans) & (tl.load(valid_ptr + slot * tab_stride + kk, mask=kk < n_chans, other=0) != 0)
    ch = tl.load(chans_ptr + slot * tab_stride + kk, mask=kmask, other=0).to(tl.int64)
    n = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = n < n_vis
    row = h_ptr + b.to(tl.int64) * stride_b
    ptrs = row + (vis_start + n.to(tl.int64))[:, None] * stride_n + ch[None, :] * stride_d
    x = tl.load(ptrs, mask=nmask[:, None] & kmask[None, :], other=0.0).to(tl.float32)
    m = tl.max(tl.abs(x), axis=0)
    tl.store(part_ptr + (b * n_tiles + tile) * KP + kk, m)


@triton.jit
def _steer_write_kernel(h_ptr, stride_b, stride_n, stride_d, vis_start,
                        tok_ptr, n_tok, chans_ptr, valid_ptr, tab_stride, slot, n_chans,
                        blend_ptr, sigma_ptr, sigma_numel, lo, hi,
                        part_ptr, n_tiles, alpha, fmin, fmax,
                        KP: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr):
    """Fold the partial maxima of row b, then steer this program's share of tokens in place."""
    kk = tl.arange(0, KP)
    kmask = kk < n_chans
    cc = tl.arange(0, BLOCK_C)
    sblk = tl.program_id(0)
    b = tl.program_id(1)
    w = _row_weight(blend_ptr, sigma_ptr, sigma_numel, b, lo, hi)
    if w == 0.0:
        return
    ref = tl.zeros([KP], dtype=tl.float32)
    for c0 in range(0, n_tiles, BLOCK_C):
        cm = (c0 + cc) < n_tiles
        p = tl.load(part_ptr + (b * n_tiles + c0 + cc)[:, None] * KP + kk[None, :], mask=cm[:, None], other=0.0)
        ref = tl.maximum(ref, tl.max(p, axis=0))
    ref = ref * alpha
    ok = tl.load(valid_ptr + slot * tab_stride + kk, mask=kmask, other=0) != 0
    ch = tl.load(chans_ptr + slot * tab_stride + kk, mask=kmask & ok, other=0).to(tl.int64)
    s = sblk * BLOCK_S + tl.arange(0, BLOCK_S)
    smask = s < n_tok
    tok = tl.load(tok_ptr + s, mask=smask, other=0).to(tl.int64)
    row = h_ptr + b.to(tl.int64) * stride_b
    ptrs = row + (vis_start + tok)[:, None] * stride_n + ch[None, :] * stride_d
    m = smask[:, None] & (kmask & ok)[None, :]
    cur = tl.load(ptrs, mask=m, other=0.0).to(tl.float32)
    target = tl.where(cur >= 0.0, ref[None, :], -ref[None, :])
    diff = target - cur
    # torch.lerp: start + w * diff for |w| < 0.5, else end - diff * (1 - w) (exact at w == 1)
    new = tl.where(tl.abs(w) < 0.5, cur + w * diff, target - diff * (1.0 - w))
    new = tl.minimum(tl.maximum(new, fmin), fmax)
    tl.store(ptrs, new.to(h_ptr.dtype.element_ty), mask=m)


@triton.jit
def _detect_partial_kernel(h_ptr, stride_b, stride_n, stride_d, vis_start, n_vis, n_dim,
                           need_ptr, slot, blend_ptr, sigma_ptr, sigma_numel, n_rows, lo, hi,
                           peak_ptr, sum_ptr, n_ttiles, n_dtiles,
                           TOK_PER_PROG: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr):
    """Per (row, token tile, channel tile): peak |h| per channel and the sum of |h|."""
    ttile = tl.program_id(0)
    dtile = tl.program_id(1)
    b = tl.program_id(2)
    need = tl.load(need_ptr + slot)
    if need == 0:
        return
    if _any_row_steered(blend_ptr, sigma_ptr, sigma_numel, n_rows, lo, hi) == 0:
        return
    d = dtile * BD + tl.arange(0, BD)
    dmask = d < n_dim
    row = h_ptr + b.to(tl.int64) * stride_b
    # element-wise accumulators, reduced once at the end: the loads of successive tiles stay
    # independent (no cross-thread reduction inside the loop), so they stream at bandwidth
    acc_max = tl.zeros([BT, BD], dtype=tl.float32)
    acc_sum = tl.zeros([BT, BD], dtype=tl.float32)
    t0 = ttile * TOK_PER_PROG
    for i in range(0, TOK_PER_PROG, BT):
        n = t0 + i + tl.arange(0, BT)
        ptrs = row + (vis_start + n.to(tl.int64))[:, None] * stride_n + d.to(tl.int64)[None, :] * stride_d
        x = tl.abs(tl.load(ptrs, mask=(n < n_vis)[:, None] & dmask[None, :], other=0.0).to(tl.float32))
        acc_max = tl.maximum(acc_max, x)
        acc_sum += x
    tl.store(peak_ptr + (b * n_ttiles + ttile).to(tl.int64) * n_dim + d, tl.max(acc_max, axis=0), mask=dmask)
    tl.store(sum_ptr + (b * n_ttiles + ttile) * n_dtiles + dtile, tl.sum(tl.sum(acc_sum, axis=0), axis=0))


@triton.jit
def _detect_final_kernel(need_ptr, slot, blend_ptr, sigma_ptr, sigma_numel, n_rows, lo, hi,
                         peak_ptr, sum_ptr, n_ttiles, n_dtiles, n_dim, n_elems, threshold,
                         chans_ptr, valid_ptr, tab_stride,
                         TOPK: tl.constexpr, DP: tl.constexpr, CB: tl.constexpr):
    """ratio[d] = max over rows of peak|h|[b, d] / mean|h|[b]; top-k into the block's tables."""
    need = tl.load(need_ptr + slot)
    if need == 0:
        return
    if _any_row_steered(blend_ptr, sigma_ptr, sigma_numel, n_rows, lo, hi) == 0:
        return
    dd = tl.arange(0, DP)
    dmask = dd < n_dim
    cc = tl.arange(0, CB)
    ratio = tl.full([DP], float("-inf"), dtype=tl.float32)
    for b in range(n_rows):
        peak = tl.zeros([DP], dtype=tl.float32)
        for t in range(n_ttiles):
            p = tl.load(peak_ptr + (b * n_ttiles + t).to(tl.int64) * n_dim + dd, mask=dmask, other=0.0)
            peak = tl.maximum(peak, p)
        tot = tl.zeros([CB], dtype=tl.float32)
        n_part = n_ttiles * n_dtiles
        for c0 in range(0, n_part, CB):
            tot += tl.load(sum_ptr + b * n_part + c0 + cc, mask=(c0 + cc) < n_part, other=0.0)
        mean = tl.sum(tot, axis=0) / n_elems
        mean = tl.maximum(mean, 1.1754943508222875e-38)
        ratio = tl.maximum(ratio, peak / mean)
    # a NaN ratio (NaN activations) ranks lowest and is never valid, like detect_ma_channels;
    # the index stays below the hidden size whatever the ratios hold
    ratio = tl.where(dmask & (ratio == ratio), ratio, float("-inf"))
    for j in tl.static_range(TOPK):
        m = tl.max(ratio, axis=0)
        idx = tl.minimum(tl.min(tl.where(ratio == m, dd, DP), axis=0), n_dim - 1)
        tl.store(chans_ptr + slot * tab_stride + j, idx.to(tl.int64))
        tl.store(valid_ptr + slot * tab_stride + j, (m >= threshold).to(tl.int8))
        ratio = tl.where(dd == idx, float("-inf"), ratio)
    tl.store(need_ptr + slot, 0)


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _flat(t: torch.Tensor) -> torch.Tensor:
    """A 1-D contiguous view (or copy) of a small read-only input such as sigma."""
    return t if t.dim() == 1 and t.is_contiguous() else t.reshape(-1).contiguous()


_FINITE = {}  # dtype -> (min, max) as floats


def _finite(dtype: torch.dtype):
    got = _FINITE.get(dtype)
    if got is None:
        fi = torch.finfo(dtype)
        got = _FINITE[dtype] = (float(fi.min), float(fi.max))
    return got


def _tables(v):
    """chans / valid of the run with one row stride (they are written in place, never copied)."""
    c = v.call
    if c.chans.stride(-1) != 1 or c.valid.stride(-1) != 1 or c.chans.stride(0) != c.valid.stride(0):
        raise RuntimeError("STAS: the channel tables must have contiguous rows of one stride.")
    return c.chans, c.valid, c.chans.stride(0)


def steer_triton_(v) -> None:
    """Gated steer of a block (a steer_fast.BlockView) in place, two launches on ``h``'s device."""
    h, p, c = v.h, v.p, v.call
    B = h.shape[0]
    K = p.n_chans
    if p.n_tok == 0 or p.n_visual == 0 or B == 0:
        return
    chans, valid, ts = _tables(v)
    tok, blend, sigma = _flat(c.token_idx), _flat(c.blend), _flat(c.sigma)
    KP = _pow2(K)
    block_n = max(16, min(1024, 2048 // KP))
    n_tiles = triton.cdiv(p.n_visual, block_n)
    part = torch.empty((B, n_tiles, KP), dtype=torch.float32, device=h.device)
    sb, sn, sd = h.stride()
    sig_n = sigma.numel()
    _steer_reduce_kernel[(n_tiles, B)](
        h, sb, sn, sd, v.vis_start, p.n_visual, chans, valid, ts, v.slot, K, blend, sigma, sig_n, p.lo, p.hi,
        part, n_tiles, KP=KP, BLOCK_N=block_n)
    block_s = max(16, min(256, 1024 // KP))
    fmin, fmax = _finite(h.dtype)
    _steer_write_kernel[(triton.cdiv(p.n_tok, block_s), B)](
        h, sb, sn, sd, v.vis_start, tok, p.n_tok, chans, valid, ts, v.slot, K, blend, sigma, sig_n, p.lo, p.hi,
        part, n_tiles, float(p.alpha), fmin, fmax, KP=KP, BLOCK_S=block_s, BLOCK_C=64)


def detect_triton_(v) -> None:
    """Gated auto detection into the block's slot of the tables (a steer_fast.BlockView), two
    launches: they work only while need[slot] != 0 and some sample is steered, then clear it."""
    h, p, c = v.h, v.p, v.call
    B, _, D = h.shape
    if p.n_visual == 0 or B == 0:
        return
    chans, valid, ts = _tables(v)
    need, blend, sigma = c.need, _flat(c.blend), _flat(c.sigma)
    if not need.is_contiguous():
        raise RuntimeError("STAS: the tables' need flags must be contiguous.")
    bt, bd, per = 16, 128, 2048
    n_t = triton.cdiv(p.n_visual, per)
    n_d = triton.cdiv(D, bd)
    peak = torch.empty((B, n_t, D), dtype=torch.float32, device=h.device)
    sums = torch.empty((B, n_t, n_d), dtype=torch.float32, device=h.device)
    sb, sn, sd = h.stride()
    sig_n = sigma.numel()
    _detect_partial_kernel[(n_t, n_d, B)](
        h, sb, sn, sd, v.vis_start, p.n_visual, D, need, v.slot, blend, sigma, sig_n, B, p.lo, p.hi,
        peak, sums, n_t, n_d, TOK_PER_PROG=per, BT=bt, BD=bd, num_warps=4)
    dp = _pow2(D)
    _detect_final_kernel[(1,)](
        need, v.slot, blend, sigma, sig_n, B, p.lo, p.hi, peak, sums, n_t, n_d, D, float(p.n_visual * D),
        float(p.threshold), chans, valid, ts, TOPK=min(p.n_chans, D), DP=dp, CB=256,
        num_warps=8 if dp <= 4096 else 16)


# -- sequence parallel (stas_core/shard.py): the same kernels with M reduced across ranks ----

def peak_triton(v) -> torch.Tensor:
    """float32 [B, K]: max |h| of the block's channels over ``v``'s video tokens (0 for rows
    outside the window): ``_steer_reduce_kernel``'s partial maxima, folded."""
    h, p = v.h, v.p
    B, K = h.shape[0], p.n_chans
    if p.n_visual == 0 or B == 0:
        return torch.zeros((B, K), dtype=torch.float32, device=h.device)
    chans, valid, ts = _tables(v)
    blend, sigma = _flat(v.call.blend), _flat(v.call.sigma)
    KP = _pow2(K)
    block_n = max(16, min(1024, 2048 // KP))
    n_tiles = triton.cdiv(p.n_visual, block_n)
    part = torch.zeros((B, n_tiles, KP), dtype=torch.float32, device=h.device)
    sb, sn, sd = h.stride()
    _steer_reduce_kernel[(n_tiles, B)](
        h, sb, sn, sd, v.vis_start, p.n_visual, chans, valid, ts, v.slot, K, blend, sigma, sigma.numel(), p.lo,
        p.hi, part, n_tiles, KP=KP, BLOCK_N=block_n)
    return part.amax(dim=1)[:, :K]


def steer_peak_triton_(v, peak: torch.Tensor) -> None:
    """``steer_triton_``'s write launch with M given (float32 [B, K], e.g. reduced across ranks)."""
    h, p, c = v.h, v.p, v.call
    B, K = h.shape[0], p.n_chans
    if p.n_tok == 0 or B == 0:
        return
    chans, valid, ts = _tables(v)
    tok, blend, sigma = _flat(c.token_idx), _flat(c.blend), _flat(c.sigma)
    KP = _pow2(K)
    part = torch.zeros((B, 1, KP), dtype=torch.float32, device=h.device)
    part[:, 0, :K] = peak
    sb, sn, sd = h.stride()
    block_s = max(16, min(256, 1024 // KP))
    fmin, fmax = _finite(h.dtype)
    _steer_write_kernel[(triton.cdiv(p.n_tok, block_s), B)](
        h, sb, sn, sd, v.vis_start, tok, p.n_tok, chans, valid, ts, v.slot, K, blend, sigma, sigma.numel(), p.lo,
        p.hi, part, 1, float(p.alpha), fmin, fmax, KP=KP, BLOCK_S=block_s, BLOCK_C=64)
