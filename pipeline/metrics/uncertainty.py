"""Confidence intervals for the report: over training seeds and over evaluation images.

A single AP or PCKh number hides two kinds of noise that decide whether a difference between
two methods is real: the run-to-run noise of training (seed) and the sampling noise of a finite
evaluation set. This module holds the small, dependency-light statistics used for both:

* :func:`t_interval` -- Student-t interval of the mean over seeds (``n - 1`` degrees of
  freedom), the usual "mean ± half-width" of a table cell;
* :func:`paired_delta` -- the same for the difference of two methods run with the same seeds.
  Pairing by seed removes the seed-to-seed variation the two runs share (same data order,
  same initialisation), which an unpaired comparison would count twice;
* :func:`percentile_interval` -- the percentile interval of a bootstrap distribution
  (see :mod:`pipeline.metrics.coco_bootstrap` and :mod:`pipeline.metrics.mpii_bootstrap`).

All of them return an :class:`Interval`. Its :meth:`Interval.format` gives the compact text the
report prints:

* ``"75.3 ± 0.4 (n=3)"`` -- a t-interval: mean ± half-width, ``n`` seeds;
* ``"75.3 [74.8, 75.9] (boot)"`` -- a bootstrap interval: the full-data estimate and the
  (possibly asymmetric) percentile bounds;
* ``"75.3 (n=1)"`` -- a single value, no interval (method ``"none"``); ``"n/a (n=0)"`` when
  there is no value at all.

With ``signed=True`` (for differences) the centre carries its sign: ``"+0.6 ± 0.3 (n=3)"``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

#: Interval methods: Student-t over seeds, percentile bootstrap, or no interval (n < 2).
METHODS: tuple[str, ...] = ("t", "bootstrap", "none")


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval.

    Attributes:
        mean: the estimate (the mean over seeds for ``"t"``; the estimate on the full
            evaluation set for ``"bootstrap"``).
        low, high: interval bounds; NaN when undefined (``method == "none"``).
        n: number of seeds (``"t"``, ``"none"``) or of bootstrap resamples used
            (``"bootstrap"``).
        method: ``"t"``, ``"bootstrap"`` or ``"none"``.
    """

    mean: float
    low: float
    high: float
    n: int
    method: str

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"Interval: unknown method {self.method!r} (expected one of {METHODS})")

    @property
    def defined(self) -> bool:
        """True when both bounds are numbers (not NaN)."""
        return not (math.isnan(self.low) or math.isnan(self.high))

    @property
    def half_width(self) -> float:
        """Half the interval's width (the ``±`` of a t-interval); NaN when undefined."""
        return (self.high - self.low) / 2.0

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0 (a difference is "significant").

        False when the interval is undefined: a single seed says nothing about noise.
        """
        return self.defined and (self.low > 0.0 or self.high < 0.0)

    def format(self, scale: float = 1.0, digits: int = 1, signed: bool = False) -> str:
        """Compact text for a table cell (see the module docstring for the three forms).

        Args:
            scale: multiply every number first (100 turns AP in [0, 1] into percent).
            digits: decimals printed.
            signed: print the centre with its sign (``+0.6``), for differences.
        """
        if self.n == 0 or math.isnan(self.mean):
            return f"n/a (n={self.n})"
        centre = _fmt(self.mean * scale, digits, signed)
        if self.method == "t" and self.defined:
            return f"{centre} ± {_fmt(self.half_width * scale, digits)} (n={self.n})"
        if self.method == "bootstrap" and self.defined:
            lo, hi = _fmt(self.low * scale, digits, signed), _fmt(self.high * scale, digits, signed)
            return f"{centre} [{lo}, {hi}] (boot)"
        return f"{centre} (n={self.n})"


def _fmt(x: float, digits: int, signed: bool = False) -> str:
    """Fixed-point text; a value that rounds to zero prints as plain ``0.0`` (no ``-0.0``)."""
    text = f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"
    if float(text) == 0.0:
        text = f"{0.0:.{digits}f}"
    return text


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")


def _finite_array(values: Iterable[float], what: str) -> np.ndarray:
    arr = np.asarray(list(values), dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: values must be finite, got {arr.tolist()}")
    return arr


def t_interval(values: Iterable[float], level: float = 0.95) -> Interval:
    """Mean and Student-t confidence interval of the mean (``n - 1`` degrees of freedom).

    The t distribution (not the normal) because seeds are few (3-5): with n = 3 the 95 %
    multiplier is 4.30, not 1.96, and a normal interval would claim far too much.

    ``n == 1`` gives the value with NaN bounds and method ``"none"``; ``n == 0`` a NaN mean.

    Raises:
        ValueError: a non-finite value or a level outside (0, 1).
    """
    _check_level(level)
    x = _finite_array(values, "t_interval")
    n = int(x.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, "none")
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, "none")
    from scipy.stats import t as student_t

    sem = float(x.std(ddof=1)) / math.sqrt(n)
    half = float(student_t.ppf(0.5 + level / 2.0, n - 1)) * sem
    return Interval(mean, mean - half, mean + half, n, "t")


def paired_delta(a: Mapping[int, float], b: Mapping[int, float], level: float = 0.95) -> Interval:
    """t-interval of ``a[s] - b[s]`` over the seeds ``s`` present in both runs.

    Pairing by seed is what makes a few seeds enough: both methods see the same seed's data
    order and initialisation, so the shared part of the noise cancels in each difference.
    Seeds present in only one mapping are left out (an unpaired value has no partner).
    """
    common = sorted(set(a) & set(b))
    return t_interval([float(a[s]) - float(b[s]) for s in common], level)


def percentile_interval(samples: Iterable[float], point: float, level: float = 0.95) -> Interval:
    """Percentile bootstrap interval: the ``(1 ± level)/2`` quantiles of the resampled statistic.

    ``point`` is the statistic on the full data (reported as the centre; the mean of the
    bootstrap samples is biased for ratio statistics such as AP). Quantiles use numpy's
    default linear interpolation. Non-finite samples (a resample where the statistic is
    undefined, e.g. one that drew no ground-truth person) are left out; ``n`` is the number of
    samples used. No finite sample gives NaN bounds and method ``"none"``.
    """
    _check_level(level)
    s = np.asarray(list(samples) if not isinstance(samples, np.ndarray) else samples, dtype=np.float64)
    s = s.reshape(-1)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return Interval(float(point), math.nan, math.nan, 0, "none")
    low, high = np.quantile(s, [0.5 - level / 2.0, 0.5 + level / 2.0])
    return Interval(float(point), float(low), float(high), int(s.size), "bootstrap")


def t_interval_pvalue(iv: Interval, level: float = 0.95) -> float:
    """Two-sided p-value of "mean = 0" for a t-interval over seeds (the paired t-test of its differences).

    The interval already holds what the test needs: its half-width is ``t_{n-1} · SE``, so SE and the
    t statistic follow without the per-seed values. NaN for a bootstrap or undefined interval (one
    seed: no test over training seeds); 0 when the seeds agree exactly on a nonzero mean (SE = 0).
    """
    _check_level(level)
    if iv.method != "t" or iv.n < 2 or not iv.defined:
        return math.nan
    from scipy.stats import t as student_t

    se = iv.half_width / float(student_t.ppf(0.5 + level / 2.0, iv.n - 1))
    if se == 0.0:
        return 0.0 if iv.mean != 0.0 else 1.0
    return float(2.0 * student_t.sf(abs(iv.mean) / se, iv.n - 1))


def holm(pvalues: Iterable[float], alpha: float = 0.05) -> list[bool]:
    """Holm's step-down: which hypotheses of a family are rejected with family-wise error ≤ ``alpha``.

    Sort the p-values ascending; reject the i-th smallest (i = 1 … m) while p_(i) ≤ α / (m − i + 1), and
    stop at the first that is not. Unlike Bonferroni it loses little power, and it needs no assumption
    about how the comparisons depend on each other (they share runs here). Returned in input order.
    """
    p = [float(x) for x in pvalues]
    if any(not (0.0 <= x <= 1.0) for x in p):
        raise ValueError(f"holm: p-values must lie in [0, 1], got {p}")
    m = len(p)
    out = [False] * m
    for rank, i in enumerate(sorted(range(m), key=lambda k: p[k])):
        if p[i] > alpha / (m - rank):
            break
        out[i] = True
    return out
