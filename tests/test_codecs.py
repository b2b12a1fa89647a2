"""Gaussian and HDM codecs, flip-back: round trips and hand-made cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.codecs import flip_back, flip_image_batch, gaussian, get_codec, hdm
from pipeline.data.skeleton import COCO, MPII
from pipeline.errors import PipelineError

W, H = 24, 32


# ------------------------------------------------------------------ HDM
def test_subpixel_demanders_masses_and_mean():
    rng = np.random.default_rng(0)
    kp = rng.uniform(-1, 30, (5, 7, 2))
    pos, mass = (t.numpy() for t in hdm.subpixel_demanders(torch.from_numpy(kp)))
    assert pos.shape == (5, 7, 4, 2) and mass.shape == (5, 7, 4)
    np.testing.assert_allclose(mass.sum(-1), 1.0, atol=1e-12)
    np.testing.assert_allclose((pos * mass[..., None]).sum(-2), kp, atol=1e-12)
    np.testing.assert_array_equal(pos[..., 0, :], np.floor(kp))
    np.testing.assert_array_equal(pos[..., 3, :], np.floor(kp) + 1)
    # by hand: a dot a quarter past a pixel centre in x and y
    _, m = hdm.subpixel_demanders(torch.tensor([2.25, 6.25], dtype=torch.float64))
    np.testing.assert_allclose(m.numpy(), [0.5625, 0.1875, 0.1875, 0.0625], rtol=0, atol=1e-15)
    # dot on a grid line: two zero masses
    _, m = hdm.subpixel_demanders(torch.tensor([3.0, 4.5], dtype=torch.float64))
    np.testing.assert_allclose(m.numpy(), [0.5, 0.0, 0.5, 0.0])


def _interior_dots(rng, n):
    dots = np.stack([rng.uniform(0, W - 1, n), rng.uniform(0, H - 1, n)], -1)
    # grid lines, integer points and the far borders
    extra = np.array([[0, 0], [W - 1, H - 1], [5, 7], [5.5, 0], [W - 1, 3.25], [2.75, H - 1]], float)
    return np.concatenate([dots, extra])


def test_hdm_round_trip_is_exact():
    rng = np.random.default_rng(1)
    dots = _interior_dots(rng, 60)
    w = np.ones(len(dots))
    kp, wt = hdm.encode_dots(dots, w, (W, H))
    np.testing.assert_array_equal(wt, 1)
    hm = torch.from_numpy(np.stack([hdm.render_demanders(p, (W, H)) for p in dots])[None])  # (1,K,H,W)
    coords, scores = hdm.decode(hm)
    np.testing.assert_allclose(coords.numpy()[0], dots, atol=1e-6)
    np.testing.assert_allclose(scores.numpy(), 1.0, atol=1e-12)
    # float32: still well below a thousandth of a pixel
    tc32, _ = hdm.decode(hm.float())
    np.testing.assert_allclose(tc32.numpy()[0], dots, atol=1e-4)
    # the absolute scale is free: scaling the heatmap changes nothing
    c7, s7 = hdm.decode(7.5 * hm)
    np.testing.assert_allclose(c7.numpy(), coords.numpy(), atol=1e-9)
    np.testing.assert_allclose(s7.numpy(), scores.numpy())


def test_hdm_decode_ignores_negative_values_and_scores_mass_fraction():
    r = hdm.render_demanders([10.3, 20.6], (W, H)) * 2.0
    hm = np.where(r > 0, r, -0.3)[None, None]  # negative background
    hm[0, 0, 2, 2] = 0.5  # isolated mass elsewhere
    coords, scores = hdm.decode(torch.from_numpy(hm))
    np.testing.assert_allclose(coords.numpy()[0, 0], [10.3, 20.6], atol=1e-6)
    np.testing.assert_allclose(scores.numpy()[0, 0], 2.0 / 2.5)


def test_hdm_decode_degenerate_heatmaps():
    hm = np.zeros((2, 2, 6, 5))
    hm[1, 0] = -1.0
    hm[1, 0, 4, 3] = -0.2  # all negative: raw argmax, score 0
    c, s = (t.numpy() for t in hdm.decode(torch.from_numpy(hm)))
    assert np.isfinite(c).all() and (s == 0).all()
    np.testing.assert_allclose(c[0, 0], [0, 0])
    np.testing.assert_allclose(c[1, 0], [3, 4])
    # one-pixel-wide and one-pixel-high heatmaps
    col = np.zeros((1, 1, 5, 1))
    col[0, 0, 2, 0], col[0, 0, 3, 0] = 0.25, 0.75
    row = np.zeros((1, 1, 1, 5))
    row[0, 0, 0, 1], row[0, 0, 0, 2] = 0.5, 0.5
    for inp, expect in ((col, [0.0, 2.75]), (row, [1.5, 0.0])):
        c, s = hdm.decode(torch.from_numpy(inp))
        np.testing.assert_allclose(c.numpy()[0, 0], expect, atol=1e-12)
        np.testing.assert_allclose(s.numpy()[0, 0], 1.0)


def _brute_force_hdm(hm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 2x2-window decoding by its definition, window by window in plain Python loops."""
    b, k, h, w = hm.shape
    coords, scores = np.zeros((b, k, 2)), np.zeros((b, k))
    for i in range(b):
        for j in range(k):
            r = np.maximum(hm[i, j], 0.0)
            best, where = -1.0, (0, 0)
            for y in range(h - 1):
                for x in range(w - 1):
                    mass = r[y, x] + r[y, x + 1] + r[y + 1, x] + r[y + 1, x + 1]
                    if mass > best:
                        best, where = mass, (y, x)
            y, x = where
            coords[i, j] = [x + (r[y, x + 1] + r[y + 1, x + 1]) / best, y + (r[y + 1, x] + r[y + 1, x + 1]) / best]
            scores[i, j] = best / r.sum()
    return coords, scores


def test_hdm_decode_matches_the_window_search_done_by_hand():
    hm = np.random.default_rng(5).normal(size=(2, 3, 6, 7)) - 0.3  # negative values too, no ties
    coords, scores = hdm.decode(torch.from_numpy(hm))
    want_coords, want_scores = _brute_force_hdm(hm)
    np.testing.assert_allclose(coords.numpy(), want_coords, rtol=0, atol=1e-12)
    np.testing.assert_allclose(scores.numpy(), want_scores, rtol=0, atol=1e-12)


@pytest.mark.parametrize("decode", [hdm.decode, gaussian.decode])
def test_a_decoder_has_one_implementation_an_array_is_decoded_as_its_tensor(decode):
    hm = np.random.default_rng(6).normal(size=(2, 3, 5, 4))
    from_array, from_tensor = decode(hm), decode(torch.from_numpy(hm))
    for got, want in zip(from_array, from_tensor):
        assert isinstance(got, torch.Tensor) and torch.equal(got, want)


def test_hdm_encode_dots_outside_weight_zero_and_render_drops_outside():
    kp = np.array([[-0.5, 3], [-0.6, 3], [W - 0.5, 0], [W - 0.4, 0], [3, H], [3, 5]])
    _, w = hdm.encode_dots(kp, np.ones(6), (W, H))
    np.testing.assert_array_equal(w, [1, 0, 1, 0, 0, 1])
    r = hdm.render_demanders([-0.25, 3.0], (W, H))
    np.testing.assert_allclose(r.sum(), 0.75)
    assert r[3, 0] == 0.75


# ------------------------------------------------------------------ Gaussian
def test_gaussian_encode_shape_peak_and_truncation():
    sigma = 2.0
    kp = np.array([[10.4, 7.6], [-7.0, 5.0], [-6.4, 5.0], [W - 1 + 6.4, 30.0]])
    target, w = gaussian.encode(kp, np.array([1, 1, 1, 0]), (W, H), sigma)
    assert target.shape == (4, H, W) and target.dtype == np.float32 and w.dtype == np.float32
    np.testing.assert_array_equal(w, [1, 0, 1, 0])
    assert target[0, 8, 10] == 1.0 and target[0].max() == 1.0
    np.testing.assert_allclose(target[0, 8, 13], np.exp(-9 / 8), rtol=1e-6)
    assert target[0, 8, 16] > 0 and target[0, 8, 17] == 0  # radius 3 sigma = 6
    assert target[0, 14, 16] > 0 and target[0, 15, 10] == 0
    assert target[1].sum() == 0 and target[3].sum() == 0
    assert target[2, 5, 0] > 0  # partially visible square keeps its weight
    block = target[0, 8 - 6 : 8 + 7, 10 - 6 : 10 + 7]  # symmetric about the pixel (10, 8)
    np.testing.assert_array_equal(block, block[::-1, ::-1])
    np.testing.assert_allclose(block.sum(), target[0].sum())


def test_gaussian_round_trip_is_nearest_pixel():
    rng = np.random.default_rng(2)
    kp = np.stack([rng.uniform(0, W - 1, 100), rng.uniform(0, H - 1, 100)], -1)
    target, w = gaussian.encode(kp, np.ones(100), (W, H), 2.0)
    coords, scores = (t.numpy() for t in gaussian.decode(torch.from_numpy(target[None])))
    np.testing.assert_array_equal(coords[0], np.floor(kp + 0.5))
    assert np.abs(coords[0] - kp).max() <= 0.5
    np.testing.assert_allclose(scores, 1.0)


def test_gaussian_quarter_offset_rule():
    hm = np.zeros((1, 3, 6, 7), np.float32)
    hm[0, 0, 2, 3] = 1.0
    hm[0, 0, 2, 4], hm[0, 0, 2, 2] = 0.6, 0.4  # right larger -> +0.25 x
    hm[0, 0, 1, 3], hm[0, 0, 3, 3] = 0.7, 0.2  # upper larger -> -0.25 y
    hm[0, 1, 4, 0] = 1.0  # left border: no x shift
    hm[0, 1, 3, 0], hm[0, 1, 5, 0] = 0.1, 0.5  # y shift +0.25
    hm[0, 2, 5, 6] = 0.9  # bottom-right corner: no shift at all
    hm[0, 2, 5, 5] = 0.3
    expect = np.array([[3.25, 1.75], [0.0, 4.25], [6.0, 5.0]])
    tc, ts = gaussian.decode(torch.from_numpy(hm))
    np.testing.assert_allclose(tc.numpy()[0], expect)
    np.testing.assert_allclose(ts.numpy()[0], [1.0, 1.0, 0.9])


def test_gaussian_decode_matches_a_brute_force_argmax():
    hm = np.random.default_rng(7).random((2, 3, 6, 5))  # continuous values: no ties
    coords, scores = gaussian.decode(torch.from_numpy(hm))
    for i in range(2):
        for j in range(3):
            m = hm[i, j]
            y, x = divmod(int(np.argmax(m)), m.shape[1])
            want = [float(x), float(y)]
            if 0 < x < m.shape[1] - 1:
                want[0] += 0.25 if m[y, x + 1] > m[y, x - 1] else -0.25
            if 0 < y < m.shape[0] - 1:
                want[1] += 0.25 if m[y + 1, x] > m[y - 1, x] else -0.25
            assert coords[i, j].tolist() == want and float(scores[i, j]) == m.max()


# ------------------------------------------------------------------ flip
@pytest.mark.parametrize("joint_set", [COCO, MPII])
@pytest.mark.parametrize("codec", ["gaussian", "hdm"])
def test_flip_back_of_flipped_rendering_equals_original(joint_set, codec):
    rng = np.random.default_rng(3)
    k = joint_set.num_joints
    kp = np.stack([rng.uniform(0, W - 1, k), rng.uniform(0, H - 1, k)], -1)
    perm = joint_set.flip_index()
    kp_flip = kp[perm].copy()  # the mirrored person: left and right swap ...
    kp_flip[:, 0] = W - 1 - kp_flip[:, 0]  # ... and x -> W - 1 - x

    def render(points):
        if codec == "gaussian":
            return gaussian.encode(points, np.ones(k), (W, H), 2.0)[0].astype(np.float64)
        return np.stack([hdm.render_demanders(p, (W, H)) for p in points])

    orig, flipped = render(kp)[None], render(kp_flip)[None]
    back = flip_back(torch.from_numpy(flipped), perm)
    assert isinstance(back, torch.Tensor)
    # random dots hit no rounding ties, so mirroring commutes with the rendering exactly
    np.testing.assert_allclose(back.numpy(), orig, atol=1e-12)
    np.testing.assert_allclose(flip_back(flipped, perm), orig, atol=1e-12)  # numpy path
    # the averaged flip test decodes to what the plain heatmaps give
    avg = (back + torch.from_numpy(orig)) / 2
    dec = hdm.decode if codec == "hdm" else gaussian.decode
    np.testing.assert_allclose(dec(avg)[0].numpy(), dec(torch.from_numpy(orig))[0].numpy(), atol=1e-9)
    if codec == "hdm":
        np.testing.assert_allclose(dec(avg)[0].numpy()[0], kp, atol=1e-6)


def test_flip_image_batch():
    x = torch.arange(24.0).reshape(1, 2, 3, 4)
    np.testing.assert_array_equal(flip_image_batch(x).numpy(), x.numpy()[..., ::-1])
    np.testing.assert_array_equal(flip_image_batch(x.numpy()), x.numpy()[..., ::-1])


def test_get_codec_interface():
    kp = np.array([[3.2, 4.7], [10.0, 2.0]])
    for name in ("gaussian", "hdm"):
        codec = get_codec(name)
        target, w = codec.encode(kp, np.ones(2), (W, H), 2.0)
        assert w.shape == (2,)
        if name == "gaussian":
            assert target.shape == (2, H, W)
            hm = target[None]
        else:
            np.testing.assert_allclose(target, kp, atol=1e-6)
            hm = np.stack([hdm.render_demanders(p, (W, H)) for p in kp])[None]
        coords, scores = codec.decode(torch.from_numpy(hm))
        assert coords.shape == (1, 2, 2) and scores.shape == (1, 2)
    with pytest.raises(PipelineError, match="codec"):
        get_codec("dark")
