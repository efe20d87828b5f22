"""The STAS steering op (STAS-SPEC section 2), in place on a block output. Per steered sample b
and MA channel d: M = max over the visual tokens of |h[b, :, d]|, and at each steered token n,
h[b, n, d] += blend * (alpha * M * sign(h[b, n, d]) - h[b, n, d]), with sign(0) = +1, in float32,
clamped to the activation dtype. ``steer_samples_`` is the one torch implementation of this math.
"""
from __future__ import annotations

from typing import Optional

import torch


def steer_samples_(h: torch.Tensor, vis_start: int, n_visual: int, token_idx: torch.Tensor, channels: torch.Tensor,
                valid: torch.Tensor, blend: torch.Tensor, alpha: float,
                peak: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Steer ``h`` [B, L, D] in place with a blend per sample and return it.

    token_idx int64 [S] (relative to vis_start), channels int64 [K], valid bool [K] (False
    leaves a channel alone), blend float32 [B] (each sample's blend; 0 leaves it alone).
    peak: float32 [B, K], M when it is known already (sequence parallel: reduced across ranks).
    """
    vis = h.narrow(1, vis_start, n_visual)
    if peak is None:
        sel = vis.index_select(2, channels)                                  # [B, N, K]
        peak = sel.abs().amax(dim=1).float()
        cur = sel.index_select(1, token_idx).float()                         # [B, S, K]
    else:
        cur = vis.index_select(1, token_idx).index_select(2, channels).float()
    ref = peak[:, None, :] * float(alpha)                                    # [B, 1, K]
    target = torch.where(cur >= 0, ref, -ref)
    w = blend.to(device=h.device, dtype=torch.float32)[:, None, None]
    new = torch.lerp(cur, target, w.expand_as(cur))
    if h.dtype.is_floating_point:
        fi = torch.finfo(h.dtype)
        new = new.clamp(fi.min, fi.max)
    new = torch.where((w == 0) | ~valid[None, None, :], cur, new)  # untouched values written back as read
    vis[:, token_idx[:, None], channels[None, :]] = new.to(h.dtype)
    return h


def steer_(
    h: torch.Tensor,
    vis_start: int,
    n_visual: int,
    token_idx: torch.Tensor,
    channels: torch.Tensor,
    alpha: float,
    blend: float,
    samples: Optional[torch.Tensor] = None,
    valid: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Steer ``h`` [B, L, D] in place and return it.

    vis_start, n_visual: the visual tokens are h[:, vis_start:vis_start + n_visual].
    token_idx: int64 [S], steered tokens relative to vis_start (same device as h).
    channels:  int64 [K], MA channels.  valid: optional bool [K]; False leaves a channel alone.
    samples:   optional int64 [R], the samples of the batch to steer (all when None).
    """
    if h.dim() != 3:
        raise ValueError(f"steer_: expected a hidden state [B, L, D], got shape {tuple(h.shape)}.")
    if vis_start < 0 or vis_start + n_visual > h.shape[1]:
        raise ValueError(
            f"steer_: visual tokens [{vis_start}, {vis_start + n_visual}) fall outside the {h.shape[1]} tokens of the block output.")
    per_sample = torch.zeros(h.shape[0], dtype=torch.float32, device=h.device)
    per_sample[samples if samples is not None else slice(None)] = float(blend)
    if valid is None:
        valid = torch.ones(channels.shape, dtype=torch.bool, device=h.device)
    return steer_samples_(h, vis_start, n_visual, token_idx, channels, valid, per_sample, alpha)
