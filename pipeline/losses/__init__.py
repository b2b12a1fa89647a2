"""Training losses: the HDM distribution-matching loss and HRNet's MSE baseline."""
from __future__ import annotations

from .hdm import HDMLoss
from .mse import JointsMSELoss

__all__ = ["HDMLoss", "JointsMSELoss"]
