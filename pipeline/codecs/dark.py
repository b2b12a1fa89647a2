"""DARK decoding (Zhang et al., CVPR 2020, "Distribution-Aware Coordinate Representation").

Why: the Gaussian codec's argmax + quarter offset is quantised to a quarter pixel (at best), which
costs accuracy at the small heatmap resolutions the paper uses. DARK assumes each heatmap is a
Gaussian, so its logarithm is a quadratic whose maximum one Newton (second-order Taylor) step
from the argmax reaches exactly. The steps, as published (and as MMPose's
``refine_keypoints_dark`` does them):

1. argmax per channel on the ORIGINAL heatmap; the score is that original maximum;
2. modulation: blur each heatmap with a Gaussian kernel of the training sigma (zero padding
   outside the map), which smooths the network's multi-peak noise back towards a Gaussian;
3. ``log(max(blurred, 1e-10))``;
4. at the argmax, central differences give the gradient ``g`` and Hessian ``Hs`` of the log map;
   the coordinate moves by ``-Hs^-1 g``.

Conventions of this implementation (pixel centres at integers, see ``docs/conventions.md``):

* Derivatives use the 3×3 neighbourhood (``dxx = L[x+1] - 2L[x] + L[x-1]``). MMPose uses the
  wider ``0.25 (L[x+2] - 2L[x] + L[x-2])``; on an exact quadratic both are exact, and the 3×3
  stencil lets the step reach one pixel closer to the border.
* Border: the step is taken only where the whole 3×3 neighbourhood lies inside the map
  (``1 <= x <= w-2`` and ``1 <= y <= h-2``); elsewhere the decoded point is the plain argmax.
* Near the border the modulation's zero padding (as in the published code and MMPose) lowers the
  blurred map on the border side and pulls the step inward. Measured on Gaussians 1 / 2 / 3 / 5 px
  from the edge (x error, worst of 50): sigma 1: 0.17 / 0.005 / 2e-4 / 1e-4 px; sigma 2: 0.81 /
  0.37 / 0.10 / 0.002 px; sigma 3: 1.5 / 0.94 / 0.54 / 0.10 px. Kept for fidelity to the "+ DARK"
  rows being reproduced; a point that far out is rarely inside the crop anyway.
* Flat or non-peaked maps: the step is taken only where the Hessian is negative definite
  (a true local maximum of the log map) and the step is finite; otherwise the argmax is kept.
  An all-zero or constant map therefore decodes to its argmax (index 0 for a constant map),
  never to NaN.
* MMPose rescales the blurred map to the original maximum; a constant factor is an additive
  constant in the log domain and leaves the step unchanged, so it is omitted here.

The blur kernel's default size follows MMPose's DARK configurations (11 at sigma 2, 17 at
sigma 3): ``2 * ceil(2.5 sigma) + 1``.
"""
from __future__ import annotations

import math
from functools import partial

import numpy as np

from . import gaussian
from .registry import Codec, register_codec

LOG_FLOOR = 1e-10  # the published algorithm's floor before the log


def default_kernel_size(sigma: float) -> int:
    """Odd modulation-kernel size for a training sigma: 7 / 11 / 17 at sigma 1 / 2 / 3."""
    return 2 * math.ceil(2.5 * float(sigma)) + 1


def _blur_matrix(n: int, sigma: float, kernel_size: int) -> np.ndarray:
    """``(n, n)`` matrix ``M`` with ``M @ v`` = 1-D Gaussian blur of ``v`` with zero padding.

    A matrix instead of a convolution call: heatmaps are small (≤ 96 px a side), and the
    separable blur of a whole batch becomes two ``einsum`` calls without scipy or OpenCV.
    """
    radius = (int(kernel_size) - 1) // 2
    taps = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(taps ** 2) / (2.0 * float(sigma) ** 2))
    kernel /= kernel.sum()
    offset = np.arange(n)[None, :] - np.arange(n)[:, None]  # column - row
    inside = np.abs(offset) <= radius
    return np.where(inside, kernel[np.clip(offset + radius, 0, 2 * radius)], 0.0)


def modulate(heatmaps: np.ndarray, sigma: float, kernel_size: int | None = None) -> np.ndarray:
    """Step 2: Gaussian blur of every ``(h, w)`` map of a ``(B,K,h,w)`` array (float64)."""
    hm = np.asarray(heatmaps, dtype=np.float64)
    size = default_kernel_size(sigma) if kernel_size is None else int(kernel_size)
    if size < 1 or size % 2 == 0:
        raise ValueError(f"modulation kernel size must be odd and positive, got {size}")
    my = _blur_matrix(hm.shape[-2], sigma, size)
    mx = _blur_matrix(hm.shape[-1], sigma, size)
    return np.einsum("ij,bkjl,ml->bkim", my, hm, mx, optimize=True)


def argmax(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 1: integer argmax ``(px, py)`` (B,K) each, and the maxima (B,K) of ``(B,K,h,w)`` maps."""
    b, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(b, k, h * w)
    idx = np.argmax(flat, axis=-1)
    scores = np.take_along_axis(flat, idx[..., None], axis=-1)[..., 0]
    return idx % w, idx // w, scores


def taylor_step(log_hm: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Step 4: the Newton offset ``-Hs^-1 g`` (B,K,2) of ``log_hm`` at ``(px, py)``.

    Zero where the 3×3 neighbourhood is not inside the map, where the Hessian is not negative
    definite, or where the offset would not be finite (see the module docstring).
    """
    b, k, h, w = log_hm.shape
    inside = (px >= 1) & (px <= w - 2) & (py >= 1) & (py <= h - 2)
    cx, cy = np.clip(px, 1, w - 2), np.clip(py, 1, h - 2)
    bi, ki = np.meshgrid(np.arange(b), np.arange(k), indexing="ij")

    def at(dy: int, dx: int) -> np.ndarray:
        return log_hm[bi, ki, cy + dy, cx + dx]

    gx = 0.5 * (at(0, 1) - at(0, -1))
    gy = 0.5 * (at(1, 0) - at(-1, 0))
    hxx = at(0, 1) - 2.0 * at(0, 0) + at(0, -1)
    hyy = at(1, 0) - 2.0 * at(0, 0) + at(-1, 0)
    hxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    det = hxx * hyy - hxy ** 2
    peaked = inside & (hxx < 0) & (det > 0)
    safe = np.where(peaked, det, 1.0)
    offset = np.stack([-(hyy * gx - hxy * gy) / safe, -(hxx * gy - hxy * gx) / safe], axis=-1)
    ok = peaked & np.isfinite(offset).all(axis=-1)
    return np.where(ok[..., None], offset, 0.0)


def decode(heatmaps, sigma: float, kernel_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(B,K,h,w)`` heatmaps (numpy or a CPU torch tensor) -> ``(coords (B,K,2) float64 heatmap px,
    scores (B,K))``; the scores are the original heatmaps' maxima, as for the Gaussian codec.

    ``sigma`` is the training targets' sigma (the modulation kernel's), ``kernel_size`` the
    modulation kernel's odd size (default :func:`default_kernel_size`). Always returns numpy.
    """
    hm = np.asarray(heatmaps.detach().cpu() if hasattr(heatmaps, "detach") else heatmaps)
    if hm.ndim != 4:
        raise ValueError(f"heatmaps must be (B,K,h,w), got {hm.shape}")
    px, py, scores = argmax(hm)
    log_hm = np.log(np.maximum(modulate(hm, sigma, kernel_size), LOG_FLOOR))
    coords = np.stack([px, py], axis=-1).astype(np.float64) + taylor_step(log_hm, px, py)
    return coords, scores


# DARK decoding of MSE's Gaussian heatmaps (the paper's "+ DARK"), and UDP (Huang et al., CVPR 2020):
# Gaussians at the exact sub-pixel position, decoded with DARK at the training sigma (as MMPose's UDP
# codec), in UDP's coordinate convention.
GAUSSIAN_DARK = register_codec(Codec("gaussian_dark", gaussian.encode, decode, decodes_with_sigma=True))
UDP = register_codec(Codec("udp", partial(gaussian.encode, subpixel=True), decode, decodes_with_sigma=True,
                           convention="udp"))
