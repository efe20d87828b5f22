"""The STAS steering op (STAS-SPEC section 2), written in place into a block output.

For each steered row b (one sample of one CFG chunk) and MA channel d:

    M[b, d]    = max over the row's visual tokens n of |h[b, n, d]|
    target     = alpha * M[b, d] * sign(h[b, n, d])          for n in the steered set S
    h[b, n, d] = h[b, n, d] + lam * (target - h[b, n, d])

sign(0) is taken as +1 so that a zero entry is still pulled to the reference magnitude
rather than silently left at zero.  Math runs in float32 and the result is clamped to the
finite range of the activation dtype (alpha * max can overflow fp16).

``steer_rows_`` is the one torch implementation of this math (the hot path's fallback calls
it; the Triton kernels are tested against it); ``steer_`` is the op as the paper states it.

Cost: only the K selected channels of the visual tokens are read ([B, N, K], a few MB) and
only |S| * K values are written; nothing the size of the hidden state is allocated, and
nothing reads a tensor value on the host, so there is no synchronisation.
"""
from __future__ import annotations

from typing import Optional

import torch


def steer_rows_(h: torch.Tensor, vis_start: int, n_visual: int, token_idx: torch.Tensor, channels: torch.Tensor,
                valid: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """Steer ``h`` [B, L, D] in place with a blend per row and return it.

    token_idx int64 [S] (relative to vis_start), channels int64 [K], valid bool [K] (False
    leaves a channel alone), weight float32 [B] (the blend of each row; 0 leaves it alone).
    """
    vis = h.narrow(1, vis_start, n_visual)
    sel = vis.index_select(2, channels)                                      # [B, N, K]
    ref = sel.abs().amax(dim=1, keepdim=True).float() * float(alpha)         # [B, 1, K]
    cur = sel.index_select(1, token_idx).float()                             # [B, S, K]
    target = torch.where(cur >= 0, ref, -ref)
    w = weight.to(device=h.device, dtype=torch.float32)[:, None, None]
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
    weight = torch.zeros(h.shape[0], dtype=torch.float32, device=h.device)
    weight[rows if rows is not None else slice(None)] = float(lam)
    if valid is None:
        valid = torch.ones(channels.shape, dtype=torch.bool, device=h.device)
    return steer_rows_(h, vis_start, n_visual, token_idx, channels, valid, weight, alpha)
