"""The STAS steering op (STAS-SPEC section 2), written in place into a block output.

For each steered row b (one sample of one CFG chunk) and MA channel d:

    M[b, d]    = max over the row's visual tokens n of |h[b, n, d]|
    target     = alpha * M[b, d] * sign(h[b, n, d])          for n in the steered set S
    h[b, n, d] = h[b, n, d] + lam * (target - h[b, n, d])

sign(0) is taken as +1 so that a zero entry is still pulled to the reference magnitude
rather than silently left at zero.  Math runs in float32 and the result is clamped to the
finite range of the activation dtype (alpha * max can overflow fp16).

Cost: only the K selected channels of the visual tokens are read ([R, N, K], a few MB) and
only |S| * K values are written; nothing the size of the hidden state is allocated, and
nothing reads a tensor value on the host, so there is no synchronisation.
"""
from __future__ import annotations

from typing import Optional

import torch


def steer_(
    h: torch.Tensor,
    vis_start: int,
    n_visual: int,
    token_idx: torch.Tensor,
    channels: torch.Tensor,
    alpha: float,
    lam: float,
    rows: Optional[torch.Tensor] = None,
    valid: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Steer ``h`` [B, L, D] in place and return it.

    vis_start, n_visual: the visual tokens are h[:, vis_start:vis_start + n_visual].
    token_idx: int64 [S], steered tokens relative to vis_start (same device as h).
    channels:  int64 [K], MA channels.  valid: optional bool [K]; False leaves a channel alone.
    rows:      optional int64 [R], the batch rows to steer (all rows when None).
    """
    if h.dim() != 3:
        raise ValueError(f"steer_: expected a hidden state [B, L, D], got shape {tuple(h.shape)}.")
    if vis_start < 0 or vis_start + n_visual > h.shape[1]:
        raise ValueError(
            f"steer_: visual tokens [{vis_start}, {vis_start + n_visual}) fall outside the {h.shape[1]} tokens of the block output.")
    vis = h.narrow(1, vis_start, n_visual)
    sel = vis.index_select(2, channels)                       # [B, N, K], K tiny
    if rows is not None:
        sel = sel.index_select(0, rows)                       # [R, N, K]
    ref = sel.abs().amax(dim=1, keepdim=True).float() * float(alpha)   # [R, 1, K]
    cur = sel.index_select(1, token_idx).float()               # [R, S, K]
    target = torch.where(cur >= 0, ref, -ref)
    new = torch.lerp(cur, target, float(lam)) if lam != 1.0 else target
    if valid is not None:
        new = torch.where(valid, new, cur)
    if h.dtype.is_floating_point:
        fi = torch.finfo(h.dtype)
        new = new.clamp(fi.min, fi.max)
    r_idx = rows if rows is not None else torch.arange(h.shape[0], device=h.device)
    vis.index_put_((r_idx[:, None, None], token_idx[None, :, None], channels[None, None, :]), new.to(h.dtype))
    return h
