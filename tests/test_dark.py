"""DARK decoding: sub-pixel accuracy on rendered Gaussians, border and flat maps, the published steps."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from pipeline.codecs import dark, gaussian, get_codec
from pipeline.errors import PipelineError

W, H = 48, 64


def render(mu: np.ndarray, sigma: float, truncate: float | None = None) -> np.ndarray:
    """An unnormalised Gaussian centred at the sub-pixel point ``mu`` (pixel centres at integers);
    ``truncate``: zero outside the square ``|d| <= truncate * sigma`` as the MSRA targets are."""
    x, y = np.arange(W)[None, :], np.arange(H)[:, None]
    g = np.exp(-((x - mu[0]) ** 2 + (y - mu[1]) ** 2) / (2.0 * sigma ** 2))
    if truncate is not None:
        g = g * ((np.abs(x - mu[0]) <= truncate * sigma) & (np.abs(y - mu[1]) <= truncate * sigma))
    return g


def random_points(rng: np.random.Generator, n: int, margin: float) -> np.ndarray:
    return np.stack([rng.uniform(margin, W - 1 - margin, n), rng.uniform(margin, H - 1 - margin, n)], -1)


@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0])  # the demo's sigma and the paper's two
@pytest.mark.parametrize("truncate", [None, 3.0])
def test_subpixel_gaussians_decode_within_005px(sigma: float, truncate: float | None):
    rng = np.random.default_rng(int(10 * sigma))
    mus = random_points(rng, 100, margin=3 * sigma + 2)
    hm = np.stack([render(p, sigma, truncate) for p in mus])[None]  # (1,K,H,W)
    coords, scores = get_codec("gaussian_dark", sigma=sigma).decode(hm)
    assert coords.shape == (1, len(mus), 2) and scores.shape == (1, len(mus))
    err = np.abs(coords[0] - mus).max()
    assert err < 0.05, err
    np.testing.assert_array_equal(scores, hm.reshape(1, len(mus), -1).max(-1))  # the original maxima
    # the test can fail: the quarter-offset decoder misses by up to a quarter pixel
    plain, _ = gaussian.decode(torch.from_numpy(hm))
    assert np.abs(plain[0].numpy() - mus).max() > 0.2


def test_float32_torch_input_and_default_kernel():
    rng = np.random.default_rng(3)
    mus = random_points(rng, 20, margin=8)
    hm = torch.from_numpy(np.stack([render(p, 2.0) for p in mus])[None]).float()
    coords, scores = dark.decode(hm, sigma=2.0)
    assert isinstance(coords, np.ndarray) and coords.dtype == np.float64
    assert np.abs(coords[0] - mus).max() < 0.05
    assert [dark.default_kernel_size(s) for s in (1.0, 2.0, 3.0)] == [7, 11, 17]  # MMPose: 11 at 2, 17 at 3


def test_border_keeps_the_argmax():
    """The Taylor step needs the whole 3×3 neighbourhood; on the outer ring the argmax stands."""
    mus = np.array([[0.3, 20.2], [W - 1.2, 30.4], [17.3, 0.1], [22.6, H - 1.3], [0.2, 0.4]])
    hm = np.stack([render(p, 2.0) for p in mus])[None]
    coords, _ = dark.decode(hm, sigma=2.0)
    np.testing.assert_array_equal(coords[0], [[0, 20], [W - 1, 30], [17, 0], [23, H - 1], [0, 0]])
    # one pixel in, the step is taken (zero padding biases it, but it moves toward the truth)
    inner = np.array([[1.3, 20.2]])
    c_in, _ = dark.decode(render(inner[0], 2.0)[None, None], sigma=2.0)
    assert c_in[0, 0, 0] != 1.0 and abs(c_in[0, 0, 1] - 20.2) < 0.05


@pytest.mark.parametrize("value", [0.0, 0.7, -0.3])
def test_flat_maps_decode_to_the_argmax_without_nan(value: float):
    hm = np.full((2, 3, H, W), value)
    coords, scores = dark.decode(hm, sigma=2.0)
    assert np.isfinite(coords).all()
    np.testing.assert_array_equal(coords, 0.0)  # argmax of a constant map: the first pixel
    np.testing.assert_array_equal(scores, value)
    # a flat plateau inside the map: no true maximum of the log map at the argmax -> no step
    plateau = np.zeros((1, 1, H, W))
    plateau[0, 0, 10:40, 10:30] = 1.0
    c, _ = dark.decode(plateau, sigma=1.0)
    assert np.isfinite(c).all()


def test_taylor_step_by_hand():
    """L(x, y) = -(x - 2.2)^2 - 0.5 (y - 1.9)^2 at the pixel (2, 2): by hand,
    gx = 0.5 (L(3,2) - L(1,2)) = 0.5 (-0.64 + 1.44) = 0.4, hxx = -0.64 + 0.08 - 1.44 = -2,
    gy = 0.5 (-0.5 * 1.21 + 0.5 * 0.81) = -0.1, hyy = -1, hxy = 0 -> offset (0.2, -0.1)."""
    x, y = np.meshgrid(np.arange(5.0), np.arange(5.0))
    log_hm = (-(x - 2.2) ** 2 - 0.5 * (y - 1.9) ** 2)[None, None]
    off = dark.taylor_step(log_hm, np.array([[2]]), np.array([[2]]))
    np.testing.assert_allclose(off[0, 0], [0.2, -0.1], atol=1e-12)
    # with a cross term the full 2×2 solve matters: L = -(u^2 + u v + v^2), u = x - 2.3, v = y - 1.6
    u, v = x - 2.3, y - 1.6
    log_hm = (-(u ** 2 + u * v + v ** 2))[None, None]
    off = dark.taylor_step(log_hm, np.array([[2]]), np.array([[2]]))
    np.testing.assert_allclose(off[0, 0], [0.3, -0.4], atol=1e-12)
    # a saddle (not a maximum) gets no step
    saddle = (-(x - 2.2) ** 2 + (y - 1.9) ** 2)[None, None]
    np.testing.assert_array_equal(dark.taylor_step(saddle, np.array([[2]]), np.array([[2]])), 0.0)


def _published_reference(hm: np.ndarray, sigma: float, size: int) -> np.ndarray:
    """The published steps, one joint at a time: argmax, blur (scipy, zero padding), floor + log,
    gradient and Hessian by central differences, ``-inv(H) @ g``."""
    out = np.zeros(hm.shape[:2] + (2,))
    for b in range(hm.shape[0]):
        for k in range(hm.shape[1]):
            m = hm[b, k]
            y, x = np.unravel_index(np.argmax(m), m.shape)
            lg = np.log(np.maximum(gaussian_filter(m, sigma, mode="constant", truncate=(size - 1) / 2 / sigma), 1e-10))
            g = np.array([0.5 * (lg[y, x + 1] - lg[y, x - 1]), 0.5 * (lg[y + 1, x] - lg[y - 1, x])])
            hxy = 0.25 * (lg[y + 1, x + 1] - lg[y - 1, x + 1] - lg[y + 1, x - 1] + lg[y - 1, x - 1])
            hs = np.array([[lg[y, x + 1] - 2 * lg[y, x] + lg[y, x - 1], hxy],
                           [hxy, lg[y + 1, x] - 2 * lg[y, x] + lg[y - 1, x]]])
            out[b, k] = np.array([x, y]) - np.linalg.inv(hs) @ g
    return out


def test_agrees_with_the_published_steps_on_noisy_maps():
    """Noisy, shifted, multi-peak maps (what a network outputs), interior maxima: the vectorised
    decoder equals the step-by-step reference, and the blur equals scipy's."""
    rng = np.random.default_rng(7)
    mus = random_points(rng, 12, margin=10)
    hm = np.stack([render(p, 2.0) + 0.3 * render(p + rng.uniform(-6, 6, 2), 1.5) for p in mus])
    hm = (hm + 0.05 * rng.standard_normal(hm.shape))[None]
    coords, _ = dark.decode(hm, sigma=2.0, kernel_size=11)
    np.testing.assert_allclose(coords, _published_reference(hm, 2.0, 11), atol=1e-9)
    blurred = dark.modulate(hm, 2.0, 11)
    np.testing.assert_allclose(blurred[0, 3], gaussian_filter(hm[0, 3], 2.0, mode="constant", truncate=2.5),
                               atol=1e-12)


def test_get_codec_dark_needs_sigma_and_checks_kernel():
    with pytest.raises(PipelineError, match="sigma"):
        get_codec("gaussian_dark")
    codec = get_codec("gaussian_dark", sigma=2.0)
    target, w = codec.encode(np.array([[5.0, 6.0]]), np.ones(1), (W, H), 2.0)
    assert target.shape == (1, H, W) and w[0] == 1  # encodes like the Gaussian codec
    with pytest.raises(ValueError, match="odd"):
        dark.decode(np.zeros((1, 1, 8, 8)), sigma=1.0, kernel_size=4)
