"""Integral regression loss (Sun et al., ECCV 2018, "Integral Human Pose Regression").

Each heatmap is read as logits: ``p = softmax(h)`` over its ``H*W`` pixels, the joint is the expected
pixel centre under ``p`` (:func:`pipeline.codecs.integral.expected_coordinates`, the decoder of these
runs, so training and decoding read the same point), and the loss is its L1 distance to the dot in
heatmap pixels, ``|x - x*| + |y - y*|``: no Gaussian target, the same ``keypoints`` the HDM runs get.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..codecs.integral import expected_coordinates
from .hdm import REDUCTIONS, reduce_per_joint
from .pairing import LossCodecs, register_loss_codecs


class IntegralL1Loss(nn.Module):
    """``L = sum_k w_k (|x_k - x*_k| + |y_k - y*_k|)`` per sample, with ``(x_k, y_k)`` the expected
    coordinate of ``softmax(h_k)``; reduced like :class:`pipeline.losses.HDMLoss` (``"mean"``: over the
    batch of per-sample sums; ``"sum"``; ``"none"``: the ``[B, K]`` weighted per-joint losses), so the
    two losses are on the same scale per joint (heatmap pixels).

    Joints with weight 0 contribute exactly 0 with zero gradient, even when their keypoints are
    NaN/inf (they are replaced before any arithmetic); weighted joints need finite keypoints.
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def forward(self, heatmaps: Tensor, keypoints: Tensor, weights: Tensor) -> Tensor:
        """The loss reduced as ``reduction`` says; arguments as :meth:`weighted_per_joint`."""
        return reduce_per_joint(self.weighted_per_joint(heatmaps, keypoints, weights), self.reduction)

    def per_sample(self, heatmaps: Tensor, keypoints: Tensor, weights: Tensor) -> Tensor:
        """``[B]``: each sample's loss, what a batch of that sample alone gives with ``"mean"``."""
        return self.weighted_per_joint(heatmaps, keypoints, weights).sum(1)

    def weighted_per_joint(self, heatmaps: Tensor, keypoints: Tensor, weights: Tensor) -> Tensor:
        """``[B, K]`` weighted L1 errors of ``heatmaps [B, K, H, W]``, ``keypoints [B, K, 2]`` as ``(x, y)``
        heatmap pixels, ``weights [B, K]`` (or ``[B, K, 1]``)."""
        if heatmaps.dim() != 4:
            raise ValueError(f"heatmaps must be [B, K, H, W], got shape {tuple(heatmaps.shape)}")
        bsz, k = heatmaps.shape[:2]
        if tuple(keypoints.shape) != (bsz, k, 2):
            raise ValueError(f"keypoints must be [B, K, 2] = {(bsz, k, 2)}, got {tuple(keypoints.shape)}")
        if tuple(weights.shape) not in ((bsz, k), (bsz, k, 1)):
            raise ValueError(f"weights must be [B, K] = {(bsz, k)}, got {tuple(weights.shape)}")
        xy = expected_coordinates(heatmaps)
        w = weights.reshape(bsz, k).to(device=xy.device, dtype=xy.dtype)
        used = w != 0
        kp = torch.where(used[..., None], keypoints.to(device=xy.device, dtype=xy.dtype), torch.zeros_like(xy))
        if not bool(torch.isfinite(kp).all()):
            raise ValueError("keypoints must be finite for joints with nonzero weight")
        return torch.where(used, (xy - kp).abs().sum(-1) * w, torch.zeros_like(w))


# Integral regression learns the dots and decodes softmax(h)'s expected coordinate.
CODECS = register_loss_codecs(LossCodecs("integral", ("integral",)))
