"""Token layout of a patchified latent video, and which tokens STAS steers (``BoundarySpec``).
Latent frame ``t`` is tokens ``[t*H'*W', (t+1)*H'*W')`` of the (t, h, w)-flattened grid; indices
count from the first video token (callers add the offset of reference or text tokens)."""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Tuple

import torch

Grid = Tuple[int, int, int]
"""Patchified latent grid (T', H', W')."""

UNITS = ("rows", "tokens", "fraction")


class TokenClass(enum.IntEnum):
    """Class of a video token in the MA hierarchy (values are stable: used in exports)."""

    INTERIOR = 0
    HEAD = 1
    TAIL = 2
    FIRST_FRAME = 3


@dataclass(frozen=True)
class BoundarySpec:
    """Which tokens are steered: the STAS_MASK that flows between nodes.

    ``head``/``tail`` are widths of the boundary portions of every latent frame after the
    first, measured in ``unit``: token ``rows`` (multiples of W'), single ``tokens``, or a
    ``fraction`` of the frame's H'*W' tokens.  Frozen so it can key caches and be shared by
    model clones without copies.
    """

    first_frame: bool = True
    boundaries: bool = True
    head: float = 1.0
    tail: float = 1.0
    unit: str = "rows"

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"STAS mask: unit must be one of {UNITS}, got {self.unit!r}.")
        if self.head < 0 or self.tail < 0:
            raise ValueError("STAS mask: head and tail widths must be >= 0.")
        if self.unit == "fraction" and (self.head > 1 or self.tail > 1):
            raise ValueError("STAS mask: with unit 'fraction', head and tail must be at most 1.0.")

    def widths(self, grid: Grid) -> Tuple[int, int]:
        """Head and tail widths in tokens for one latent frame of ``grid`` (clipped to the frame)."""
        _, h, w = grid
        frame = h * w

        def conv(x: float) -> int:
            if self.unit == "rows":
                n = int(round(x)) * w
            elif self.unit == "tokens":
                n = int(round(x))
            else:
                n = int(math.ceil(x * frame - 1e-9))
            return max(0, min(frame, n))

        return conv(self.head), conv(self.tail)

    def is_empty_for(self, grid: Grid) -> bool:
        """True when this spec selects no token of ``grid`` (a silent no-op the nodes refuse)."""
        return _class_map(self, tuple(grid)).max().item() == 0 if _valid_grid(grid) else True

    def describe(self) -> str:
        parts = []
        if self.first_frame:
            parts.append("first frame")
        if self.boundaries:
            parts.append(f"head {self.head:g} / tail {self.tail:g} {self.unit}")
        return ", ".join(parts) if parts else "nothing"


def _valid_grid(grid: Grid) -> bool:
    return len(grid) == 3 and all(int(g) > 0 for g in grid)


@lru_cache(maxsize=256)
def _class_map(spec: BoundarySpec, grid: Grid) -> torch.Tensor:
    t, h, w = (int(g) for g in grid)
    frame = h * w
    cls = torch.zeros(t, frame, dtype=torch.uint8)
    if spec.boundaries and t > 1:
        head, tail = spec.widths(grid)
        if head:
            cls[1:, :head] = TokenClass.HEAD
        if tail:
            cls[1:, frame - tail:] = torch.where(cls[1:, frame - tail:] == TokenClass.HEAD,
                                                 cls[1:, frame - tail:],
                                                 torch.tensor(TokenClass.TAIL, dtype=torch.uint8))
    if spec.first_frame:
        cls[0] = TokenClass.FIRST_FRAME
    return cls.reshape(-1)


def token_classes(grid: Grid, spec: BoundarySpec | None = None) -> torch.Tensor:
    """Class (``TokenClass``) of every video token of ``grid``, as uint8 of length T'*H'*W'.

    With ``spec`` None, the full hierarchy (first frame, one-row head and tail) is returned,
    which is what the visualizer and the preview colour.
    """
    if not _valid_grid(grid):
        raise ValueError(f"token layout: grid must be three positive sizes (T', H', W'), got {grid}.")
    return _class_map(spec or BoundarySpec(), tuple(int(g) for g in grid))


@lru_cache(maxsize=256)
def steer_token_indices(grid: Grid, spec: BoundarySpec) -> torch.Tensor:
    """Indices (int64, on the CPU, relative to the first video token) of the tokens STAS steers.

    Cached per (grid, spec); callers keep their own per-device copy so that the hot path
    does no host work and no host-device transfer.  Treat the result as read-only.
    """
    return torch.nonzero(token_classes(grid, spec) != TokenClass.INTERIOR).reshape(-1)


def grid_from_latent(shape: Tuple[int, ...], patch_size: Tuple[int, int, int]) -> Grid:
    """Patchified grid of a latent of shape [..., T, H, W] (ComfyUI pads up to the patch size)."""
    if len(shape) < 5:
        raise ValueError(
            f"expected a video latent [B, C, T, H, W], got shape {tuple(shape)}: STAS works on video models only.")
    t, h, w = shape[-3:]
    pt, ph, pw = patch_size
    return (-(-t // pt), -(-h // ph), -(-w // pw))
