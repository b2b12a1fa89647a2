"""Integral regression codec (Sun et al., ECCV 2018, "Integral Human Pose Regression").

The network's heatmap is read as logits of a distribution over the pixels: ``p = softmax(h)`` over
the ``H*W`` pixels, and the joint is its expected pixel centre ``(sum_n p_n x_n, sum_n p_n y_n)``
(pixel (row i, col j) has centre (j, i), docs/conventions.md). Training targets are the dots, as for
HDM (:func:`pipeline.codecs.hdm.encode_dots`). The score is the softmax mass of the best 2x2 window
(:func:`pipeline.codecs.hdm.decode_softmax`), in ``[0, 1]``: the expectation itself says nothing about
how concentrated the distribution is.

:func:`expected_coordinates` is differentiable and is also what
:class:`pipeline.losses.integral.IntegralL1Loss` trains, so loss and decoder read the same point.
"""
from __future__ import annotations

import numpy as np
import torch

from . import hdm
from .registry import Codec, register_codec


def expected_coordinates(heatmaps: torch.Tensor) -> torch.Tensor:
    """``(B,K,h,w)`` logits -> ``(B,K,2)`` expected ``(x, y)`` under the per-map softmax (differentiable).

    Computed in the input's floating dtype (float32 for half precision: the softmax of a
    half-precision map is too coarse for sub-pixel coordinates).
    """
    if heatmaps.dim() != 4:
        raise ValueError(f"heatmaps must be (B,K,h,w), got {tuple(heatmaps.shape)}")
    dtype = heatmaps.dtype if heatmaps.dtype in (torch.float32, torch.float64) else torch.float32
    b, k, h, w = heatmaps.shape
    p = torch.softmax(heatmaps.to(dtype).reshape(b, k, h * w), dim=-1).reshape(b, k, h, w)
    xs = torch.arange(w, dtype=dtype, device=heatmaps.device)
    ys = torch.arange(h, dtype=dtype, device=heatmaps.device)
    x = (p.sum(-2) * xs).sum(-1)  # marginal over the rows, then the mean column
    y = (p.sum(-1) * ys).sum(-1)
    return torch.stack([x, y], dim=-1)


def decode(heatmaps):
    """``(B,K,h,w)`` heatmaps (numpy or torch) -> ``(coords (B,K,2), scores (B,K))``, float64;
    returns the input's array library."""
    is_torch = isinstance(heatmaps, torch.Tensor)
    hm = heatmaps.detach() if is_torch else torch.tensor(np.asarray(heatmaps, dtype=np.float64))
    coords = expected_coordinates(hm.double())
    _, scores = hdm.decode_softmax(hm)
    if is_torch:
        return coords, scores
    return coords.numpy(), scores.numpy()


# Integral regression learns the dots; its coordinate is softmax(h)'s expectation.
CODEC = register_codec(Codec("integral", hdm.encode_target, decode, dot_targets=True, softmax_decoding=True))
