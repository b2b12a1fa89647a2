"""Output adapters shared by the pose models.

:class:`CenteredHeatmaps` is what HDM runs put after the model: each heatmap minus its spatial
mean. HDM's suppliers are ``relu(h) / sum(relu(h))`` (Eq. 3), which is blind to the heatmap's
scale and undefined when no pixel is positive. Trained from scratch (the demo), the 1×1 head's
bias drifts down under that loss (the far, low-mass pixels dominate its gradient) until whole
heatmaps are ≤ 0 and receive no gradient again: measured on the demo, over half of all heatmaps
were dead after two epochs. Centring removes that direction exactly (a centred map always has a
positive pixel unless it is constant) and leaves the loss on every live heatmap unchanged in form;
decoding sees the same centred output. MSE runs do not use it: their targets fix the scale.
"""
from __future__ import annotations

import torch
from torch import nn


class CenteredHeatmaps(nn.Module):
    """Wraps a heatmap model; returns ``h - mean_{H,W}(h)`` per sample and joint."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x)
        return h - h.mean(dim=(-2, -1), keepdim=True)
