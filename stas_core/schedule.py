"""When to steer: a window of the denoising schedule, in sigma.  All window logic lives here.
A model call is steered when ``sigma(end_percent - 0.0015) < sigma <= sigma(start_percent - 0.0015)``
(``BOUNDARY_SLACK``); ``start_percent = 0`` and ``end_percent = 1`` are open ends."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Tuple

import torch

F32_MAX = float(torch.finfo(torch.float32).max)

BOUNDARY_SLACK = 0.0015
"""How much of denoising earlier each boundary is taken: 1.5 entries of ComfyUI's 1000-step
sigma tables, more than both roundings above, less than the gap between two of 500 steps."""


def f32_floor(x: float) -> float:
    """Largest float32 value <= x, as a Python float (clamped to the finite float32 range).

    For any float32 s: ``s > x`` iff ``s > f32_floor(x)`` and ``s <= x`` iff
    ``s <= f32_floor(x)``, so the kernels compare float32 sigmas against float32 bounds and
    still agree exactly with ``SigmaWindow.contains`` computed in double precision.
    """
    if math.isnan(x):
        raise ValueError("sigma bound is NaN")
    if x >= F32_MAX:
        return F32_MAX
    if x <= -F32_MAX:
        return -F32_MAX
    t = torch.tensor(x, dtype=torch.float64).to(torch.float32)
    if float(t) > x:
        t = torch.nextafter(t, torch.tensor(-math.inf, dtype=torch.float32))
    return float(t)


ALWAYS: Tuple[float, float] = (-F32_MAX, F32_MAX)
"""Window bounds (lo, hi) that contain every finite sigma."""


@dataclass(frozen=True)
class SigmaWindow:
    start_percent: float
    end_percent: float
    sigma_start: float
    sigma_end: float
    sigma_past_start: float = math.inf  # at or below it a sigma lies past the start's boundary band

    @classmethod
    def from_percents(cls, start: float, end: float, percent_to_sigma: Callable[[float], float]) -> "SigmaWindow":
        """The window from a model's ``percent_to_sigma``; sigma_start / sigma_end are the
        effective bounds of the rule above (open ends: +inf / -inf)."""
        if not (0.0 <= start <= 1.0 and 0.0 <= end <= 1.0):
            raise ValueError("start_percent and end_percent must lie in 0..1.")
        if start >= end:
            raise ValueError(
                f"start_percent ({start}) must be below end_percent ({end}); "
                "STAS steers early denoising, e.g. 0.0 to 0.4.")
        hi = math.inf if start <= 0.0 else float(percent_to_sigma(max(0.0, start - BOUNDARY_SLACK)))
        lo = -math.inf if end >= 1.0 else float(percent_to_sigma(end - BOUNDARY_SLACK))
        past = float(percent_to_sigma(min(1.0, start + BOUNDARY_SLACK)))
        return cls(start, end, hi, lo, past)

    def for_model(self, model_sampling) -> "SigmaWindow":
        """The same percents in the sigmas of ``model_sampling`` (the one a sampler really uses)."""
        return SigmaWindow.from_percents(self.start_percent, self.end_percent, model_sampling.percent_to_sigma)

    def bounds(self) -> Tuple[float, float]:
        """float32 (lo, hi) with ``lo < sigma <= hi`` (sigma as float32) equal to ``contains``."""
        return f32_floor(self.sigma_end), f32_floor(self.sigma_start)

    def contains(self, sigma: float) -> bool:
        """True when a model call at ``sigma`` is steered (the module's rule)."""
        return self.sigma_end < sigma <= self.sigma_start

    def steps_in(self, sigmas: Iterable[float]) -> int:
        """How many steps of a sampler's ``sigmas`` (n + 1 values, the last one the end) are steered."""
        s = [float(v) for v in sigmas]
        return sum(1 for v in s[:-1] if self.contains(v))

    def starts_inside(self, first_sigma: float) -> bool:
        """True when a run whose first step is at ``first_sigma`` begins past the window's start
        (denoise < 1, the later stage of split steps): the window's first steps are not in it."""
        return self.contains(first_sigma) and first_sigma <= self.sigma_past_start

    def describe(self) -> str:
        """E.g. '0-0.4 of denoising (sigma above 0.8421)'."""
        lo = "" if math.isinf(self.sigma_end) else f"above {self.sigma_end:.4g}"
        hi = "" if math.isinf(self.sigma_start) else f"at most {self.sigma_start:.4g}"
        rng = ", ".join(x for x in (hi, lo) if x) or "any"
        return f"{self.start_percent:g}-{self.end_percent:g} of denoising (sigma {rng})"


def window_bounds(window: SigmaWindow) -> Tuple[float, float]:
    """``window.bounds()``: the (lo, hi) the steering kernels compare float32 sigmas against."""
    return window.bounds()
