"""Losses and codecs of the training variants: HDM with softmax suppliers (against POT), integral
regression (hand-computed 3x3 cases), MSE + alpha x HDM, and the decoders that read softmax(h)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.codecs import DOT_CODECS, get_codec
from pipeline.codecs.hdm import render_demanders
from pipeline.codecs.integral import expected_coordinates
from pipeline.losses import HDMLoss, IntegralL1Loss, JointsMSELoss, MSEHDMLoss

ot = pytest.importorskip("ot")

torch.set_num_threads(1)


def _pot_inputs(dot: tuple[float, float], h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """POT's cost matrix ``(N, 4)`` and demander masses ``(4,)``, built here from the paper's Eq. 4."""
    x, y = dot
    fx, fy = math.floor(x), math.floor(y)
    dem = [(fx, fy), (fx + 1, fy), (fx, fy + 1), (fx + 1, fy + 1)]
    b = torch.tensor([(1 - abs(x - dx)) * (1 - abs(y - dy)) for dx, dy in dem], dtype=torch.float64)
    pix = torch.tensor([(j, i) for i in range(h) for j in range(w)], dtype=torch.float64)
    m = torch.cdist(pix, torch.tensor(dem, dtype=torch.float64))
    return m, b


# ------------------------------------------------------------------------------ HDM, softmax suppliers
@pytest.mark.parametrize("dot, eps, n", [((2.3, 1.6), 1.0, 1000), ((0.2, 3.9), 0.5, 200)])
def test_softmax_suppliers_match_pot_loss_and_gradient(dot, eps, n):
    height, width = 5, 4
    g = torch.Generator().manual_seed(7)
    logits = 2.0 * torch.randn(height * width, generator=g, dtype=torch.float64)
    logits[:3] = -4.0  # negative pixels: relu would give them no mass, softmax does
    m, b = _pot_inputs(dot, height, width)
    h_ref = logits.clone().requires_grad_(True)
    ref = ot.sinkhorn2(torch.softmax(h_ref, 0), b, m, reg=eps, method="sinkhorn_log", numItermax=n,
                       stopThr=0, warn=False)
    ref.backward()
    h = logits.reshape(1, 1, height, width).clone().requires_grad_(True)
    loss = HDMLoss(epsilon=eps, iterations=n, suppliers="softmax", reduction="sum")(
        h, torch.tensor([[dot]], dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64))
    loss.backward()
    assert abs(float(loss) - float(ref)) <= 1e-8 * float(ref)
    grad = h.grad.reshape(-1)
    assert float((grad - h_ref.grad).abs().max()) <= 1e-7 * float(h_ref.grad.abs().max())
    assert bool((grad[:3] != 0).all())  # every pixel gets gradient, the negative ones too


def test_softmax_suppliers_with_naive_demanders_is_the_closed_form():
    height, width = 4, 5
    logits = torch.linspace(-2.0, 3.0, height * width, dtype=torch.float64).reshape(1, 1, height, width)
    dot = (1.7, 2.2)  # in pixel (row 2, col 2): the naive demander sits at (2, 2)
    p = torch.softmax(logits.reshape(-1), 0)
    want = sum(float(p[i * width + j]) * math.hypot(j - 2, i - 2) for i in range(height) for j in range(width))
    got = HDMLoss(demanders="naive", suppliers="softmax", reduction="sum")(
        logits, torch.tensor([[dot]], dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64))
    assert abs(float(got) - want) < 1e-12


def test_softmax_suppliers_never_die_and_ignore_shifts_and_dead_joint_settings():
    h = -5.0 - torch.rand(2, 3, 6, 5, dtype=torch.float64)  # every pixel negative: dead under relu
    kp = torch.tensor([[[1.2, 2.5], [3.0, 0.4], [2.5, 4.9]]] * 2, dtype=torch.float64)
    w = torch.ones(2, 3, dtype=torch.float64)
    relu = HDMLoss(dead_joints="zero")
    assert float(relu(h, kp, w)) == 0.0 and relu.last_dead_joints == 6
    values = []
    for dead in ("zero", "softmax"):
        crit = HDMLoss(dead_joints=dead, suppliers="softmax")
        values += [float(crit(h, kp, w)), float(crit(h + 3.0, kp, w))]
        assert crit.last_dead_joints == 0
    assert values[0] > 0 and max(values) - min(values) < 1e-9
    # the relu loss's softmax revival of dead joints is the same transport cost
    assert abs(float(HDMLoss(dead_joints="softmax")(h, kp, w)) - values[0]) < 1e-12
    with pytest.raises(ValueError, match="suppliers"):
        HDMLoss(suppliers="sigmoid")


# ------------------------------------------------------------------------------ integral regression
_P3 = torch.tensor([[0.05, 0.05, 0.10], [0.10, 0.30, 0.10], [0.05, 0.20, 0.05]], dtype=torch.float64)


def test_integral_expected_coordinate_and_l1_by_hand():
    # softmax(log p) = p: column masses (0.2, 0.55, 0.25) -> x = 1.05; row masses (0.2, 0.5, 0.3) -> y = 1.1
    logits = torch.log(_P3).expand(2, 1, 3, 3).clone().requires_grad_(True)
    xy = expected_coordinates(logits)
    assert torch.allclose(xy[0, 0], torch.tensor([1.05, 1.1], dtype=torch.float64), atol=1e-12)
    kp = torch.tensor([[[0.8, 1.5]], [[math.nan, math.inf]]], dtype=torch.float64)  # sample 2: unused joint
    w = torch.tensor([[2.0], [0.0]], dtype=torch.float64)
    loss = IntegralL1Loss()(logits, kp, w)
    assert abs(float(loss) - 2.0 * (0.25 + 0.4) / 2) < 1e-12  # mean over the batch of per-sample sums
    assert abs(float(IntegralL1Loss(reduction="sum")(logits, kp, w)) - 1.3) < 1e-12
    loss.backward()
    assert bool(torch.isfinite(logits.grad).all()) and float(logits.grad[0].abs().sum()) > 0
    assert bool((logits.grad[1] == 0).all())
    # d|x - 0.8|/dh_n = p_n (x_n - 1.05) (x > 0.8), d|y - 1.5|/dh_n = -p_n (y_n - 1.1); times w / B = 1
    xs = torch.arange(3.0, dtype=torch.float64)
    want = _P3 * ((xs[None, :] - 1.05) - (xs[:, None] - 1.1))
    assert torch.allclose(logits.grad[0, 0], want, atol=1e-12)


def test_integral_loss_gradcheck_and_bad_keypoints():
    h = torch.randn(2, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    kp = torch.rand(2, 2, 2, dtype=torch.float64) * 2.5
    w = torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: IntegralL1Loss()(x, kp, w), (h,))
    kp[1, 1, 0] = math.nan  # a weighted joint
    with pytest.raises(ValueError, match="finite"):
        IntegralL1Loss()(h, kp, w)


@pytest.mark.parametrize("dot", [(2.3, 1.6), (0.0, 4.0), (3.75, 0.5)])
def test_integral_codec_round_trip_on_a_peaked_heatmap(dot):
    codec = get_codec("integral")
    kp, wt = codec.encode(np.array([dot]), np.ones(1), (5, 6))
    assert np.allclose(kp, [dot]) and wt.tolist() == [1.0]
    # logits of the dot's bilinear splat: the softmax is that splat, whose mean is the dot
    hm = np.log(render_demanders(kp[0], (5, 6)) + 1e-30)[None, None]
    for x in (hm, torch.from_numpy(hm)):
        coords, scores = codec.decode(x)
        assert np.allclose(np.asarray(coords)[0, 0], dot, atol=1e-9)
        assert abs(float(np.asarray(scores)[0, 0]) - 1.0) < 1e-9


# ------------------------------------------------------------------------------ hdm_softmax decoding
def test_hdm_softmax_decodes_the_concentrated_mass_and_scores_it():
    dot = (2.3, 1.6)
    splat = render_demanders(dot, (5, 4))
    hm = np.log(0.9 * splat + 0.1 / 20)[None, None]  # 90 % on the window, the rest spread evenly
    coords, scores = get_codec("hdm_softmax").decode(hm)
    # window (2..3, 1..2) holds 0.9 + 4 * 0.005; its weighted mean, by hand
    win = 0.9 * splat[1:3, 2:4] + 0.005
    x = 2 + win[:, 1].sum() / win.sum()
    y = 1 + win[1, :].sum() / win.sum()
    assert np.allclose(coords[0, 0], [x, y], atol=1e-12) and abs(scores[0, 0] - 0.92) < 1e-12
    # the raw-logit hdm decoder reads something else (relu of log-probabilities: all zero here)
    assert get_codec("hdm").decode(hm)[1][0, 0] == 0.0
    # float32 logits: the same hand-computed numbers, to float32's resolution
    t_coords, t_scores = get_codec("hdm_softmax").decode(torch.from_numpy(hm).float())
    assert np.allclose(t_coords.numpy()[0, 0], [x, y], atol=1e-5) and abs(float(t_scores[0, 0]) - 0.92) < 1e-6
    assert set(DOT_CODECS) == {"hdm", "hdm_softmax", "integral"}


# ------------------------------------------------------------------------------ MSE + alpha x HDM
def test_mse_hdm_is_the_sum_of_its_terms():
    g = torch.Generator().manual_seed(3)
    h = torch.randn(2, 3, 6, 5, generator=g, dtype=torch.float64)
    target = torch.rand(2, 3, 6, 5, generator=g, dtype=torch.float64)
    kp = torch.rand(2, 3, 2, generator=g, dtype=torch.float64) * 4
    w = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    hdm = HDMLoss(dead_joints="softmax")
    got = MSEHDMLoss(hdm, alpha=0.25)(h, target, kp, w)
    want = JointsMSELoss()(h, target, w) + 0.25 * HDMLoss(dead_joints="softmax")(h, kp, w)
    assert abs(float(got) - float(want)) < 1e-12
    h[0, 0] = -1.0  # a dead heatmap: the HDM term's count shows through
    MSEHDMLoss(hdm, alpha=1.0)(h, target, kp, w)
    assert MSEHDMLoss(hdm, alpha=1.0).last_dead_joints == hdm.last_dead_joints == 1
    for bad in (0, -1.0, math.nan, True):
        with pytest.raises(ValueError, match="alpha"):
            MSEHDMLoss(hdm, alpha=bad)


# ------------------------------------------------------------------------------ per-sample losses
def _per_sample_case() -> tuple[torch.Tensor, ...]:
    """Four people, 3 joints on 6x5 heatmaps: one with an unweighted joint (NaN dot), one whose first
    heatmap has no positive pixel (a dead joint under Eq. 3), one with no weighted joint at all."""
    g = torch.Generator().manual_seed(3)
    heat = torch.randn(4, 3, 6, 5, generator=g, dtype=torch.float64)
    heat[2, 0] = -torch.rand(6, 5, generator=g, dtype=torch.float64)
    kp = torch.rand(4, 3, 2, generator=g, dtype=torch.float64) * torch.tensor([3.9, 4.9], dtype=torch.float64)
    w = torch.ones(4, 3, dtype=torch.float64)
    w[1, 2], kp[1, 2] = 0.0, float("nan")
    w[3] = 0.0
    target = torch.rand(4, 3, 6, 5, generator=g, dtype=torch.float64)
    return heat, target, kp, w


@pytest.mark.parametrize("name", ["mse", "hdm_relu", "hdm_softmax", "integral", "mse_hdm"])
def test_per_sample_loss_is_each_person_alone(name):
    """One batched call gives what a batch of each person alone gives (the evaluation's per-person
    losses come from the batched call)."""
    heat, target, kp, w = _per_sample_case()
    hdm = HDMLoss(epsilon=1.0, iterations=500, dead_joints="softmax",
                  suppliers="softmax" if name == "hdm_softmax" else "relu")
    crit, fields = {"mse": (JointsMSELoss(), (target,)), "hdm_relu": (hdm, (kp,)), "hdm_softmax": (hdm, (kp,)),
                    "integral": (IntegralL1Loss(), (kp,)),
                    "mse_hdm": (MSEHDMLoss(hdm, alpha=0.01), (target, kp))}[name]
    batched = crit.per_sample(heat, *fields, w)
    assert batched.shape == (4,)
    alone = torch.stack([crit(heat[i:i + 1], *(f[i:i + 1] for f in fields), w[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, alone, rtol=1e-6, atol=1e-9)
    assert float(batched[3]) == 0.0
