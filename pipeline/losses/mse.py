"""HRNet's ``JointsMSELoss``: the Gaussian-heatmap baseline the paper compares against."""
from __future__ import annotations

from torch import Tensor, nn
from .pairing import LossCodecs, register_loss_codecs


class JointsMSELoss(nn.Module):
    """Mean over joints of ``0.5 * MSE(pred * w, target * w)``, as in HRNet's ``lib/core/loss.py``.

    Each joint's MSE averages over the batch and the pixels; the 0.5 factor and the weighting
    of both prediction and target by the joint's target weight are kept so that loss values
    (and hence learning rates) match the published baselines.
    """

    def __init__(self, use_target_weight: bool = True) -> None:
        super().__init__()
        self.use_target_weight = use_target_weight

    def forward(self, heatmaps: Tensor, targets: Tensor, weights: Tensor) -> Tensor:
        """``heatmaps``, ``targets``: ``[B, K, H, W]``; ``weights``: ``[B, K]`` (or ``[B, K, 1]``)."""
        # mean over batch and pixels per joint, then mean over joints == global mean
        return self._squared_error(heatmaps, targets, weights).mean()

    def per_sample(self, heatmaps: Tensor, targets: Tensor, weights: Tensor) -> Tensor:
        """``[B]``: each sample's loss, what a batch of that sample alone gives."""
        return self._squared_error(heatmaps, targets, weights).mean(dim=(1, 2))

    def _squared_error(self, heatmaps: Tensor, targets: Tensor, weights: Tensor) -> Tensor:
        """``[B, K, H*W]``: half the squared error per pixel, both sides weighted per joint."""
        if heatmaps.shape != targets.shape or heatmaps.dim() != 4:
            raise ValueError(f"heatmaps and targets must both be [B, K, H, W], got "
                             f"{tuple(heatmaps.shape)} and {tuple(targets.shape)}")
        bsz, k = heatmaps.shape[:2]
        pred = heatmaps.reshape(bsz, k, -1)
        gt = targets.reshape(bsz, k, -1).to(pred.dtype)
        if self.use_target_weight:
            w = weights.reshape(bsz, k, 1).to(pred.dtype)
            pred, gt = pred * w, gt * w
        return 0.5 * (pred - gt) ** 2


# Gaussian heatmap targets: the default ones, or UDP's sub-pixel ones in UDP's convention.
CODECS = register_loss_codecs(LossCodecs("mse", ("gaussian", "udp")))
