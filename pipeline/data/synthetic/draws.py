"""Scalar random draws shared by every sampler of the synthetic scenes.

Why: each draw is a plain float (not a numpy scalar), so the values that flow into poses,
colours and boxes print and serialise the same everywhere."""
from __future__ import annotations

import numpy as np


def uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """One uniform draw in [lo, hi) as a float: every module of the generator draws through it."""
    return float(rng.uniform(lo, hi))


def gauss(rng: np.random.Generator, mu: float, sd: float) -> float:
    """One normal draw with mean ``mu`` and standard deviation ``sd``, as a float."""
    return float(rng.normal(mu, sd))
