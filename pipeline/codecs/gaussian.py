"""MSRA/HRNet Gaussian heatmap codec, in this project's convention (pixel centres at integers).

Encoding: for each joint an unnormalised Gaussian ``exp(-d^2 / (2 sigma^2))`` centred at the
NEAREST pixel centre ``(round(x), round(y))`` of the heatmap position, truncated to the
square ``|dx|, |dy| <= 3 sigma`` (HRNet's ``tmp_size = 3 sigma``); zero elsewhere. A joint's
weight becomes 0 when that square lies entirely outside the heatmap.

Decoding: argmax per channel (score = max value), then 0.25 px toward the larger neighbour
in x and, independently, in y when that neighbour exists on both sides (HRNet needs both
axes away from the border, and its ``1 < px`` test also excludes column 1; here each axis
only needs its two neighbours).

Round-trip bound: ``decode(encode(p))`` returns exactly the nearest pixel centre of ``p``
(the Gaussian is symmetric about it, so no quarter shift applies), hence the error is at
most 0.5 px per axis (quantisation of the target).
UDP's targets (``subpixel=True``, the ``udp`` codec): the same window (``|d| <= 3 sigma`` about the
nearest pixel centre) and weights, but the Gaussian is centred at the exact position, as UDP's
"unbiased" encoding and MMPose's ``generate_udp_gaussian_heatmaps`` do; the integer rounding above is
one of the biases UDP removes (up to 0.5 heatmap px, which DARK decoding could not undo).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .registry import Codec, register_codec


def encode(
    keypoints_hm: np.ndarray,
    weights: np.ndarray,
    heatmap_size: Sequence[int],
    sigma: float,
    subpixel: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``(K,2)`` heatmap-frame joints, ``(K,)`` weights -> ``(target (K,h,w) f32, weights f32)``.

    Channels with weight 0 (given, or set because the square is fully outside) are zero. With
    ``subpixel`` the Gaussian's centre is the joint itself rather than its nearest pixel centre (UDP);
    the window stays the square about the nearest pixel centre.
    """
    kp = np.asarray(keypoints_hm, dtype=np.float64).reshape(-1, 2)
    w_in = np.asarray(weights, dtype=np.float32).reshape(-1).copy()
    width, height = int(heatmap_size[0]), int(heatmap_size[1])
    radius = 3.0 * float(sigma)
    finite = np.isfinite(kp).all(axis=1)
    mu = np.floor(np.where(finite[:, None], kp, 0.0) + 0.5)  # nearest pixel centre
    outside = (
        (mu[:, 0] + radius < 0) | (mu[:, 0] - radius > width - 1)
        | (mu[:, 1] + radius < 0) | (mu[:, 1] - radius > height - 1)
    )
    weights_out = np.where(outside | ~finite, 0.0, w_in).astype(np.float32)

    centre = np.where(finite[:, None], kp, 0.0) if subpixel else mu
    xs, ys = np.arange(width, dtype=np.float64)[None, :], np.arange(height, dtype=np.float64)[None, :]
    two_s2 = 2.0 * float(sigma) ** 2
    gx = np.exp(-((xs - centre[:, 0:1]) ** 2) / two_s2) * (np.abs(xs - mu[:, 0:1]) <= radius)  # (K, w)
    gy = np.exp(-((ys - centre[:, 1:2]) ** 2) / two_s2) * (np.abs(ys - mu[:, 1:2]) <= radius)  # (K, h)
    target = gy[:, :, None] * gx[:, None, :]
    target *= (weights_out > 0)[:, None, None]
    return target.astype(np.float32), weights_out


def _decode_torch(hm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    b, k, h, w = hm.shape
    flat = hm.reshape(b, k, h * w)
    scores, idx = flat.max(dim=-1)
    px, py = idx % w, torch.div(idx, w, rounding_mode="floor")
    dtype = hm.dtype if hm.is_floating_point() else torch.float32
    coords = torch.stack([px, py], dim=-1).to(dtype)

    def val(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        yy = yy.clamp(0, h - 1)
        xx = xx.clamp(0, w - 1)
        return flat.gather(-1, (yy * w + xx)[..., None])[..., 0]

    inx = (px > 0) & (px < w - 1)
    iny = (py > 0) & (py < h - 1)
    diff_x = (val(py, px + 1) - val(py, px - 1)).sign().to(dtype)
    diff_y = (val(py + 1, px) - val(py - 1, px)).sign().to(dtype)
    coords[..., 0] += 0.25 * diff_x * inx.to(dtype)
    coords[..., 1] += 0.25 * diff_y * iny.to(dtype)
    return coords, scores


def decode(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B,K,h,w)`` heatmaps -> ``(coords (B,K,2) heatmap px, scores (B,K))``, torch tensors.

    One implementation, in torch (what inference decodes with); an array is taken as a tensor of its
    dtype, so tools and tests check the very code that runs.
    """
    hm = torch.as_tensor(heatmaps)
    if hm.dim() != 4:
        raise ValueError(f"heatmaps must be (B,K,h,w), got {tuple(hm.shape)}")
    return _decode_torch(hm.detach())


# MSE's codec: Gaussian heatmaps, argmax decoding with the quarter-pixel shift; DARK decodes the same
# heatmaps as a variant the evaluation reports beside it.
CODEC = register_codec(Codec("gaussian", encode, decode, variants=(("dark", "gaussian_dark"),)))
