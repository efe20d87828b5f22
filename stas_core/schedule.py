"""When to steer: a window of the denoising schedule, in sigma.

The user gives start/end as percent of denoising; the model's own ``percent_to_sigma``
maps them to sigma, so the window stays right under split sigmas, denoise < 1,
KSamplerAdvanced start/end steps and the separate high/low-noise experts of Wan 2.2.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class SigmaWindow:
    start_percent: float
    end_percent: float
    sigma_start: float
    sigma_end: float

    @classmethod
    def from_percents(cls, start: float, end: float, percent_to_sigma: Callable[[float], float]) -> "SigmaWindow":
        if not (0.0 <= start <= 1.0 and 0.0 <= end <= 1.0):
            raise ValueError("start_percent and end_percent must lie in 0..1.")
        if start >= end:
            raise ValueError(
                f"start_percent ({start}) must be below end_percent ({end}); "
                "STAS steers early denoising, e.g. 0.0 to 0.4.")
        return cls(start, end, float(percent_to_sigma(start)), float(percent_to_sigma(end)))

    def contains(self, sigma: float) -> bool:
        """True while ``sigma`` lies in [sigma_end, sigma_start] (sigma falls as denoising runs).

        The end is exclusive at end_percent < 1 so that a step sitting exactly on the boundary
        is steered by at most one of two adjacent windows.
        """
        if self.end_percent >= 1.0:
            return sigma <= self.sigma_start
        return self.sigma_end < sigma <= self.sigma_start
