"""Scalar random draws shared by every sampler of the synthetic scenes.

Why: each draw is a plain float (not a numpy scalar), so the values that flow into poses,
colours and boxes print and serialise the same everywhere."""
from __future__ import annotations

import numpy as np


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _n(rng: np.random.Generator, mu: float, sd: float) -> float:
    return float(rng.normal(mu, sd))
