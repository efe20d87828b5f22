"""STAS under sequence parallelism (xDiT USP, as raylight runs it): each rank of a process group
holds one contiguous slice of a block's tokens, the sequence padded at its end to a multiple of
the world size, so rank r holds tokens [r * n, (r + 1) * n) of n = its slice length. The math is
``steer.steer_samples_``'s on the global token set: M and auto detection's statistics are reduced
across ranks with one all-reduce (MAX) of a small tensor per steered block call, then each rank
steers the steered tokens of its own slice with the same op. Why: docs/multigpu.md.
No ComfyUI or Ray import: the caller hands in the group (torch.distributed).
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field, replace
from typing import Any, Tuple

import torch
import torch.distributed as dist

from .channels import ma_stats, ratio_from_stats, top_channels
from .shared import PerDevice, Shared
from .steer import steer_samples_
from .steer_fast import BlockView, SteerCall, StepParams, _sample_blend, backend_for, device_guard, store_detected_


def slice_geometry(n_local: int, rank: int, vis_start: int, n_visual: int) -> Tuple[int, int, int]:
    """(first video token in the local slice, how many video tokens it holds, global index of
    that token among the video tokens) for a slice of ``n_local`` tokens on ``rank``, the video
    tokens being [vis_start, vis_start + n_visual) of the global sequence."""
    off = rank * n_local
    a = max(vis_start, off)
    b = min(vis_start + n_visual, off + n_local)
    n = max(0, b - a)
    return (a - off, n, a - vis_start) if n else (0, 0, 0)


def local_tokens(token_idx: torch.Tensor, first: int, n: int) -> torch.Tensor:
    """The steered tokens (indices among the video tokens) that lie in video tokens [first,
    first + n), relative to ``first``."""
    t = token_idx[(token_idx >= first) & (token_idx < first + n)]
    return t - first


@dataclass(eq=False)
class Shard(Shared):
    """This rank's place in a sequence-parallel group. ``group``: a torch.distributed process group
    (None: the default group). Keeps the local token lists it built and the runs whose auto
    channels are detected (decided on the host, identically on every rank)."""

    group: Any
    rank: int
    world: int
    _tok: PerDevice = field(default_factory=PerDevice, repr=False)   # local token lists, per device
    _done: "weakref.WeakSet" = field(default_factory=weakref.WeakSet, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def in_window(self, sigma: torch.Tensor, lo: float, hi: float) -> bool:
        """Whether some sample's sigma lies in the window (one host read per model call: every
        rank must take the same decision, as it decides whether the block calls all-reduce)."""
        s = sigma.detach().reshape(-1).float().cpu()
        return bool(((s > lo) & (s <= hi)).any())

    def detecting(self, run: Any, active: bool) -> bool:
        """Auto channels still to detect in this call of ``run``: until the first call that steers
        (it detects at every steered block). Host state, the same on every rank, so the ranks agree
        on the shape of the all-reduce."""
        with self._lock:
            if run in self._done:
                return False
            if active:
                self._done.add(run)
            return True

    def tokens(self, key: Any, token_idx: torch.Tensor, first: int, n: int) -> torch.Tensor:
        """``local_tokens``, built once per ``key`` (one host read of ``token_idx`` then)."""
        return self._tok.get((key, first, n), token_idx.device,
                             lambda d: local_tokens(token_idx.cpu(), first, n).to(d))

    def all_reduce_max_(self, t: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return t


def steer_shard_(h: torch.Tensor, shard: Shard, call: SteerCall, p: StepParams, slot: int, vis_offset: int,
                 key: Any = None) -> None:
    """Steer this rank's slice ``h`` [B, n, D] of a block output in place, exactly as ``steer_fast``
    steers the whole output on one process (``p`` and ``call`` describe the global token set; ``key``
    names the token list, e.g. the grid). One all-reduce: [B, K] maxima, or while detecting
    [world, B, D + 1] peaks and sums (each rank fills its own row)."""
    vis_start = int(vis_offset) + p.prefix
    a, n, first = slice_geometry(h.shape[1], shard.rank, vis_start, p.n_visual)
    tok = shard.tokens((key, p.n_tok, p.n_visual), call.token_idx[:p.n_tok], first, n)
    lp = replace(p, prefix=0, n_visual=n, n_tok=tok.numel())
    v = BlockView(h, replace(call, token_idx=tok), lp, slot, a)
    B, D, K = h.shape[0], h.shape[-1], p.n_chans
    triton = backend_for(h.device).name == "triton"
    with device_guard(h):
        if p.detect:
            buf = torch.zeros((shard.world, B, D + 1), dtype=torch.float32, device=h.device)
            if n:
                peak, l1 = ma_stats(h.narrow(1, a, n))
                buf[shard.rank, :, :D] = peak
                buf[shard.rank, :, D] = l1
            shard.all_reduce_max_(buf)
            peaks = buf[:, :, :D].amax(dim=0)
            mean = buf[:, :, D].sum(dim=0) / float(p.n_visual * D)
            idx, ok, _ = top_channels(ratio_from_stats(peaks, mean), p.threshold, K)
            store_detected_(v, idx, ok)
            m = peaks.index_select(1, call.chans[slot, :K])
        else:
            m = _local_peak(v, triton)
            shard.all_reduce_max_(m)
        if not tok.numel():
            return
        if triton:
            from .steer_triton import steer_peak_triton_
            steer_peak_triton_(v, m)
        else:
            c = v.call
            steer_samples_(h, a, n, tok, c.chans[slot, :K], c.valid[slot, :K], _sample_blend(v), p.alpha, peak=m)


def _local_peak(v: BlockView, triton: bool) -> torch.Tensor:
    """float32 [B, K]: max |h| of the block's channels over the local video tokens."""
    B, K = v.h.shape[0], v.p.n_chans
    if not v.p.n_visual:
        return torch.zeros((B, K), dtype=torch.float32, device=v.h.device)
    if triton:
        from .steer_triton import peak_triton
        return peak_triton(v)
    chans = v.call.chans[v.slot, :K]
    return v.h.narrow(1, v.vis_start, v.p.n_visual).index_select(2, chans).abs().amax(dim=1).float()
