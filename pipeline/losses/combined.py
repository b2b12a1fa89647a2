"""MSE to Gaussian targets plus ``alpha`` times HDM (loss ``mse_hdm``), from the start of training.

The MSE term pins the heatmaps' scale and shape to HRNet's Gaussians (so no centring wrapper is
needed, and MSE's decoders, DARK included, still apply); the HDM term adds the transport cost of the
same heatmaps to their dots. Both terms read the same network output and joint weights.
"""
from __future__ import annotations

import math

from torch import Tensor, nn

from .hdm import HDMLoss
from .mse import JointsMSELoss
from .pairing import LossCodecs, register_loss_codecs


class MSEHDMLoss(nn.Module):
    """``JointsMSELoss(h, target, w) + alpha * HDMLoss(h, keypoints, w)``.

    The two terms keep their own reductions (MSE: a mean over joints, batch and pixels, as HRNet's;
    HDM: a mean over the batch of per-sample sums, in heatmap pixels), so ``alpha`` is the weight of
    one such HDM unit against HRNet's MSE value. ``last_dead_joints`` is the HDM term's: the heatmaps
    are not centred here, so joints can die (the run's ``hdm.dead_joints`` decides what they get).
    """

    def __init__(self, hdm: HDMLoss, alpha: float) -> None:
        super().__init__()
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) \
                or alpha <= 0:
            raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
        self.mse = JointsMSELoss(use_target_weight=True)
        self.hdm = hdm
        self.alpha = float(alpha)

    @property
    def last_dead_joints(self) -> int:
        return self.hdm.last_dead_joints

    def forward(self, heatmaps: Tensor, targets: Tensor, keypoints: Tensor, weights: Tensor) -> Tensor:
        """``heatmaps``, ``targets`` ``[B, K, H, W]``; ``keypoints [B, K, 2]`` heatmap pixels; ``weights [B, K]``."""
        return self.mse(heatmaps, targets, weights) + self.alpha * self.hdm(heatmaps, keypoints, weights)

    def per_sample(self, heatmaps: Tensor, targets: Tensor, keypoints: Tensor, weights: Tensor) -> Tensor:
        """``[B]``: each sample's loss, what a batch of that sample alone gives."""
        return self.mse.per_sample(heatmaps, targets, weights) \
            + self.alpha * self.hdm.per_sample(heatmaps, keypoints, weights)


# The MSE term keeps the heatmaps Gaussian: the Gaussian codec, decoded with DARK beside it.
CODECS = register_loss_codecs(LossCodecs("mse_hdm", ("gaussian",)))
