"""Training losses: the HDM distribution-matching loss and HRNet's MSE baseline."""
from __future__ import annotations

from .hdm import EPSILON_UNITS, HDMLoss, effective_epsilon
from .mse import JointsMSELoss

__all__ = ["EPSILON_UNITS", "HDMLoss", "JointsMSELoss", "effective_epsilon"]
