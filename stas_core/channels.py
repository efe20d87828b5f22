"""Which residual-stream channels hold massive activations (MAs).

MA channels are few, fixed per model, and elevated at every visual token, so a channel's
own mean is high too: ranking by a channel's peak over its *own* mean would miss them.
We therefore rank a channel by its peak |h| over the visual tokens divided by the mean |h|
of the whole hidden state (the typical activation size); true MAs sit at 50x and more.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

MAX_CHANNELS = 64
"""Most channels steered per block (explicit lists, profiles and top_k alike): MAs are a handful
of channels, and the kernels keep one block's channels in registers."""


@dataclass(frozen=True)
class ChannelSelection:
    """The user's channel choice: ``auto`` detection, or a fixed tuple of indices."""

    explicit: Optional[Tuple[int, ...]] = None
    threshold: float = 50.0
    top_k: int = 4

    @property
    def auto(self) -> bool:
        return self.explicit is None

    def validate(self, hidden_size: int) -> None:
        """Raise ValueError if an explicit channel does not exist in a model of ``hidden_size``."""
        if self.explicit is not None:
            bad = [c for c in self.explicit if not 0 <= c < hidden_size]
            if bad:
                raise ValueError(
                    f"channels: {bad} out of range for this model's hidden size {hidden_size} "
                    f"(valid 0-{hidden_size - 1}); use 'auto' to detect the MA channels.")
        if self.explicit is not None and len(self.explicit) > MAX_CHANNELS:
            raise ValueError(
                f"channels: {len(self.explicit)} channels listed, more than the {MAX_CHANNELS} STAS steers per block; "
                "massive activations sit in a handful of channels: list only those, or use 'auto'.")
        if not 1 <= self.top_k <= MAX_CHANNELS:
            raise ValueError(f"channels: top_k must lie in 1-{MAX_CHANNELS}, got {self.top_k}.")


def parse_channels(text: str, threshold: float = 50.0, top_k: int = 4) -> ChannelSelection:
    """Parse ``auto`` or a comma list of channel indices (ranges ``a-b`` allowed)."""
    text = (text or "").strip().lower()
    if text in ("", "auto"):
        return ChannelSelection(None, float(threshold), int(top_k))
    chans = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if lo > hi:  # would be an empty range: refuse rather than silently drop it
                    raise ValueError(f"channels: range {part!r} runs backwards; write it as {hi}-{lo}.")
                chans.extend(range(lo, hi + 1))
            else:
                chans.append(int(part))
        except ValueError as e:
            if str(e).startswith("channels:"):
                raise
            raise ValueError(
                f"channels: cannot read {part!r}; write 'auto' or a list of channel indices like 12,407,1536.") from None
    if not chans:
        raise ValueError("channels: the list is empty; write 'auto' or channel indices like 12,407.")
    return ChannelSelection(tuple(sorted(set(chans))), float(threshold), int(top_k))


def ma_ratio(h_visual: torch.Tensor) -> torch.Tensor:
    """Peak-to-mean ratio per channel of h_visual [B, N, D], max over the batch: float32 [D].

    No full-size temporary: the peak |h| comes from amax and amin (two [B, D] reductions)
    and the mean |h| from an L1 norm accumulated in float32.
    """
    peak, l1 = ma_stats(h_visual)
    b, n, d = h_visual.shape
    return ratio_from_stats(peak, l1 / float(n * d))


def ma_stats(h_visual: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(peak |h| per channel float32 [B, D], sum of |h| float32 [B]) of h_visual [B, N, D]."""
    peak = torch.maximum(h_visual.amax(dim=1), -h_visual.amin(dim=1)).float()
    return peak, torch.linalg.vector_norm(h_visual, ord=1, dim=(1, 2), dtype=torch.float32)


def detect_ma_channels(h_visual: torch.Tensor, threshold: float, top_k: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k MA channels of h_visual [B, N, D] without a host synchronisation.

    Returns (indices int64 [k], valid bool [k], ratio float32 [k]); ``valid`` is False for
    channels under ``threshold``, which the steering op then leaves untouched (a mask, not a
    Python branch on tensor values, so no sync and no recompile under torch.compile).  A NaN
    ratio (a NaN in the activations) ranks lowest and is never valid; +Inf ranks highest.
    """
    return top_channels(ma_ratio(h_visual), threshold, top_k)


def ratio_from_stats(peak: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """``ma_ratio`` from its parts: peak |h| float32 [B, D] and mean |h| float32 [B] (sequence
    parallel: reduced across ranks first, stas_core/shard.py)."""
    return (peak / mean.clamp_min(torch.finfo(torch.float32).tiny)[:, None]).amax(dim=0)


def top_channels(ratio: torch.Tensor, threshold: float, top_k: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``detect_ma_channels`` from ratios float32 [D]."""
    ratio = torch.where(torch.isnan(ratio), torch.full_like(ratio, -torch.inf), ratio)
    k = min(int(top_k), ratio.shape[0])
    top, idx = torch.topk(ratio, k)
    return idx, top >= float(threshold), top
