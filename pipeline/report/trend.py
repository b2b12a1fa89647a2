"""Is a validation curve still moving at the end of training? A trend test on its last points.

Two consecutive points say little: the last learning-rate step flattens every curve for an epoch or two,
so "the last two points are close" holds by construction. Instead the slope of the last
:data:`TREND_POINTS` validation points is estimated with ordinary least squares (metric against epoch)
and given a 95 % interval:

- several training seeds: one slope per seed, then the Student-t interval over the seeds (the seed-to-seed
  spread of the slope is the noise that matters);
- one seed: the OLS slope's own t-interval from the regression residuals (n − 2 degrees of freedom).

The interval decides the wording: "still rising" when it lies above 0, "falling" when below, otherwise
"flat within ±x" with x the larger absolute bound (the largest slope the data cannot rule out).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..metrics.uncertainty import t_interval

#: How many of the last validation points the slope is fitted to.
TREND_POINTS = 3


@dataclass(frozen=True)
class Trend:
    """Slope of the metric per epoch over the last ``points`` validation points, with its interval."""

    slope: float
    low: float
    high: float
    points: int
    seeds: int

    @property
    def method(self) -> str:
        return f"t over {self.seeds} seeds" if self.seeds >= 2 else "OLS, one seed"

    @property
    def verdict(self) -> str:
        """"still rising", "falling" or "flat within ±x" (x in the slope's units, rounded up)."""
        if self.low > 0:
            return "still rising"
        if self.high < 0:
            return "falling"
        return f"flat within ±{_ceil2(max(abs(self.low), abs(self.high)))}"

    @property
    def bounds(self) -> str:
        """"[-0.05, +0.30]": rounded outwards, so the printed interval contains the computed one."""
        return f"[{_floor2(self.low, True)}, {_ceil2(self.high, True)}]"

    def format(self, unit: str) -> str:
        """"slope +0.12 [-0.05, +0.30] AP/epoch over the last 3 points (t over 3 seeds): flat within ±0.30"."""
        return (f"slope {self.slope:+.2f} {self.bounds} {unit}/epoch over the last {self.points} validation "
                f"points ({self.method}): {self.verdict}")


def _floor2(x: float, signed: bool = False) -> str:
    """Rounded down to 2 decimals: a printed lower bound never claims more than the computed one."""
    v = math.floor(x * 100 + 1e-9) / 100
    return f"{v:+.2f}" if signed else f"{v:.2f}"


def _ceil2(x: float, signed: bool = False) -> str:
    """Rounded up to 2 decimals (the upper-bound counterpart of :func:`_floor2`)."""
    v = math.ceil(x * 100 - 1e-9) / 100
    return f"{v:+.2f}" if signed else f"{v:.2f}"


def ols_slope(x: Sequence[float], y: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(slope, low, high): the least-squares slope of ``y`` on ``x`` and its t-interval from the residuals
    (n − 2 degrees of freedom; needs at least 3 points and two distinct x)."""
    from scipy.stats import t as student_t

    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = xa.size
    if n < 3 or ya.size != n:
        raise ValueError(f"ols_slope: need ≥ 3 paired points, got {n} x and {ya.size} y")
    sxx = float(np.sum((xa - xa.mean()) ** 2))
    if sxx == 0.0:
        raise ValueError("ols_slope: all x are equal")
    slope = float(np.sum((xa - xa.mean()) * (ya - ya.mean())) / sxx)
    resid = ya - ya.mean() - slope * (xa - xa.mean())
    se = math.sqrt(float(np.sum(resid ** 2)) / (n - 2) / sxx)
    half = float(student_t.ppf(0.5 + level / 2.0, n - 2)) * se
    return slope, slope - half, slope + half


def last_points(df: pd.DataFrame, points: int = TREND_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, metric) of the last ``points`` epochs that have a validation value."""
    d = df[["epoch", "val_metric"]].dropna().sort_values("epoch").tail(points)
    return d["epoch"].to_numpy(dtype=np.float64), d["val_metric"].to_numpy(dtype=np.float64)


def curve_trend(per_seed: Mapping[int, pd.DataFrame], points: int = TREND_POINTS, scale: float = 1.0,
                level: float = 0.95) -> Trend | None:
    """The trend of one run's validation curves (see the module docstring), in ``scale`` × the logged
    units per epoch; None when no seed has ``points`` validation points."""
    fits = []
    for _, df in sorted(per_seed.items()):
        x, y = last_points(df, points)
        if x.size == points and np.unique(x).size > 1:
            fits.append(ols_slope(x, y * scale, level))
    if not fits:
        return None
    if len(fits) == 1:
        return Trend(*fits[0], points=points, seeds=1)
    iv = t_interval([f[0] for f in fits], level)
    return Trend(iv.mean, iv.low, iv.high, points=points, seeds=len(fits))
