"""HDM codec: dot annotations, sub-pixel demanders, 2x2-window decoding (paper Sec. 3.2, 3.4).

Heatmap coordinates follow docs/conventions.md: pixel (row i, col j) has centre (j, i).

Demanders (Eq. 4, sub-pixel form): a dot at ``(x, y)`` is represented by the four pixel
centres ``(fx, fy), (fx+1, fy), (fx, fy+1), (fx+1, fy+1)`` with ``fx = floor(x)``,
``fy = floor(y)`` and bilinear masses ``(1 - |x - x_i|)(1 - |y - y_i|)``. The masses sum to
1 and their weighted mean is the dot. Masses can be 0 (dot on a grid line) and demanders can
lie outside the grid at the border; consumers (loss, renderer) must handle both.

Decoding, on ``relu(h)``: the 2x2 window of adjacent pixels with the largest sum; the
weighted mean of its four pixel centres with the values normalised to 1. Rendering the
demanders of a dot and decoding returns the dot exactly (for dots in ``[0, W-1] x [0, H-1]``).

Score: ``window sum / total relu mass`` in ``[0, 1]``, a scale-free confidence (the HDM
loss normalises the heatmap, so its absolute scale is free). For a heatmap with no positive
value the score is 0 and the coordinate is the centre of the raw argmax pixel.
Heatmaps one pixel wide or high are zero-padded to two before the window search.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .registry import Codec, register_codec

# demander order: (fx, fy), (fx+1, fy), (fx, fy+1), (fx+1, fy+1)
_OFFSETS = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0))


def subpixel_demanders(keypoints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(..., 2)`` dots -> ``(positions (..., 4, 2), masses (..., 4))``, torch tensors (an array is
    taken as a tensor; integer dots become float32): one definition of Eq. 4 for the loss, the
    renderer and the tests."""
    kp = torch.as_tensor(keypoints)
    kp = kp if kp.is_floating_point() else kp.float()
    base = torch.floor(kp)
    off = torch.tensor(_OFFSETS, dtype=kp.dtype, device=kp.device)
    pos = base[..., None, :] + off
    d = (1.0 - (kp[..., None, :] - pos).abs()).clamp(min=0.0)
    return pos, d[..., 0] * d[..., 1]


def inside_heatmap(keypoints, heatmap_size: Sequence[int], margin: Sequence[float] = (0.5, 0.5)):
    """Mask of dots inside ``[-mx, W-1+mx] x [-my, H-1+my]`` (numpy), ``margin = (mx, my)``.

    The default 0.5 is the heatmap's pixel area, which is also the input crop's in this project's
    convention; UDP's crop reaches only half an INPUT pixel past the outer heatmap pixel centres,
    so its dataset passes that smaller margin (see :class:`pipeline.data.dataset.TopDownDataset`).
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    w, h = float(heatmap_size[0]), float(heatmap_size[1])
    mx, my = float(margin[0]), float(margin[1])
    with np.errstate(invalid="ignore"):
        return (
            (kp[..., 0] >= -mx) & (kp[..., 0] <= w - 1.0 + mx)
            & (kp[..., 1] >= -my) & (kp[..., 1] <= h - 1.0 + my)
        )


def encode_dots(
    keypoints: np.ndarray, weights: np.ndarray, heatmap_size: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """The HDM target is the dot itself: returns ``(keypoints f32, weights f32)``.

    Weights are set to 0 for dots outside ``[-0.5, W-0.5] x [-0.5, H-0.5]``.
    """
    kp = np.asarray(keypoints, dtype=np.float32).reshape(-1, 2).copy()
    w = np.asarray(weights, dtype=np.float32).reshape(-1)
    w = np.where(inside_heatmap(kp, heatmap_size), w, 0.0).astype(np.float32)
    return kp, w


def render_demanders(keypoint: Sequence[float], heatmap_size: Sequence[int]) -> np.ndarray:
    """Splat one dot's demander masses into an ``(h, w)`` float64 heatmap.

    Masses of demanders outside the grid are dropped (for tests and visualisation).
    """
    w, h = int(heatmap_size[0]), int(heatmap_size[1])
    out = np.zeros((h, w), dtype=np.float64)
    pos, mass = subpixel_demanders(torch.from_numpy(np.asarray(keypoint, dtype=np.float64).reshape(2)))
    for (x, y), m in zip(pos.tolist(), mass.tolist()):
        xi, yi = int(x), int(y)
        if 0 <= xi < w and 0 <= yi < h:
            out[yi, xi] += m
    return out


def _decode_torch(hm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    raw = hm if hm.is_floating_point() else hm.float()
    b, k, h, w = raw.shape
    r = raw.clamp(min=0)
    if h < 2 or w < 2:
        r = torch.nn.functional.pad(r, (0, max(0, 2 - w), 0, max(0, 2 - h)))
    wp = r.shape[-1]
    a, bb = r[..., :-1, :-1], r[..., :-1, 1:]
    c, d = r[..., 1:, :-1], r[..., 1:, 1:]
    sums = (a + bb + c + d).reshape(b, k, -1)
    ww = wp - 1
    s, idx = sums.max(dim=-1)

    def take(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(b, k, -1).gather(-1, idx[..., None])[..., 0]

    vb, vc, vd = take(bb), take(c), take(d)
    jx = (idx % ww).to(raw.dtype)
    iy = torch.div(idx, ww, rounding_mode="floor").to(raw.dtype)
    total = r.reshape(b, k, -1).sum(-1)
    ok = s > 0
    safe = torch.where(ok, s, torch.ones_like(s))
    x = jx + (vb + vd) / safe
    y = iy + (vc + vd) / safe
    amax = raw.reshape(b, k, -1).argmax(dim=-1)
    x = torch.where(ok, x, (amax % w).to(raw.dtype))
    y = torch.where(ok, y, torch.div(amax, w, rounding_mode="floor").to(raw.dtype))
    score = torch.where(ok, s / torch.where(total > 0, total, torch.ones_like(total)),
                        torch.zeros_like(s))
    return torch.stack([x, y], dim=-1), score.clamp(0.0, 1.0)


def decode(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B,K,h,w)`` heatmaps -> ``(coords (B,K,2), scores (B,K))``, torch tensors.

    One implementation, in torch (what inference decodes with); an array is taken as a tensor of its
    dtype, so tools and tests check the very code that runs.
    """
    hm = torch.as_tensor(heatmaps)
    if hm.dim() != 4:
        raise ValueError(f"heatmaps must be (B,K,h,w), got {tuple(hm.shape)}")
    return _decode_torch(hm.detach())


def softmax_heatmaps(heatmaps: torch.Tensor) -> torch.Tensor:
    """``softmax`` over each ``(h, w)`` map of ``(B,K,h,w)`` heatmaps, in float64 (an array is taken
    as a tensor).

    The distribution that HDM's ``suppliers: softmax`` and integral regression train on; decoders
    of those runs read it rather than the raw logits, so the decoder sees what the loss saw.
    """
    heatmaps = torch.as_tensor(heatmaps)
    if heatmaps.dim() != 4:
        raise ValueError(f"heatmaps must be (B,K,h,w), got {tuple(heatmaps.shape)}")
    hm = heatmaps.detach().double()
    b, k, h, w = hm.shape
    return torch.softmax(hm.reshape(b, k, h * w), dim=-1).reshape(b, k, h, w)


def decode_softmax(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 2x2-window decoding of :func:`decode` on ``softmax(h)`` (codec ``hdm_softmax``).

    Softmax is positive and sums to 1, so the score (window sum / total mass) is the probability
    mass of the best 2x2 window, in ``[0, 1]``, and no heatmap is ever without positive mass.
    """
    return decode(softmax_heatmaps(heatmaps))


def encode_target(keypoints: np.ndarray, weights: np.ndarray, heatmap_size: Sequence[int],
                  sigma: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`encode_dots` with the codecs' common signature: dots have no width, ``sigma`` is unused."""
    return encode_dots(keypoints, weights, heatmap_size)


# HDM learns the dots themselves; with ``suppliers: softmax`` its heatmaps are read through softmax(h).
CODEC = register_codec(Codec("hdm", encode_target, decode, dot_targets=True))
SOFTMAX_CODEC = register_codec(Codec("hdm_softmax", encode_target, decode_softmax, dot_targets=True,
                                     softmax_decoding=True))
