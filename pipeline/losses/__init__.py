"""Training losses: the HDM distribution-matching loss, HRNet's MSE baseline, integral regression and
MSE + alpha × HDM."""
from __future__ import annotations

from .combined import MSEHDMLoss
from .hdm import EPSILON_UNITS, SUPPLIERS, HDMLoss, effective_epsilon
from .integral import IntegralL1Loss
from .mse import JointsMSELoss
from .pairing import LossCodecs, loss_codecs, paired_codec, register_loss_codecs

__all__ = ["EPSILON_UNITS", "SUPPLIERS", "HDMLoss", "IntegralL1Loss", "JointsMSELoss", "MSEHDMLoss",
           "effective_epsilon", "LossCodecs", "loss_codecs", "paired_codec", "register_loss_codecs"]
