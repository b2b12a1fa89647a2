"""Tests of the HDM loss (pipeline.losses) against POT, autograd and closed forms.

Kept small: everything runs on one CPU thread in well under a minute.
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch

from pipeline.losses import HDMLoss, JointsMSELoss
from pipeline.losses.sinkhorn import (
    naive_demanders,
    sinkhorn_potentials,
    sinkhorn_transport_cost,
    subpixel_demanders,
    transport_cost,
)

ot = pytest.importorskip("ot")

torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------
# helpers


def _heatmap(kind: str, h: int, w: int, seed: int) -> torch.Tensor:
    """Random float64 heatmap: "zeros" has ~half its pixels <= 0 (relu zeros), "positive" none."""
    g = torch.Generator().manual_seed(seed)
    if kind == "zeros":
        x = torch.randn(h * w, generator=g, dtype=torch.float64)
        x[0] = abs(float(x[0])) + 0.1  # never all zero
        return x
    return torch.rand(h * w, generator=g, dtype=torch.float64) + 0.05


def _cost_matrix(kp: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent construction of POT's inputs: M (N x 4) and b (4,), float64, numpy-built."""
    x, y = float(kp[0]), float(kp[1])
    fx, fy = math.floor(x), math.floor(y)
    dem = [(fx, fy), (fx + 1, fy), (fx, fy + 1), (fx + 1, fy + 1)]
    b = np.array([(1 - abs(x - dx)) * (1 - abs(y - dy)) for dx, dy in dem])
    ys, xs = np.mgrid[0:h, 0:w]
    pix = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    m = np.sqrt(((pix[:, None, :] - np.asarray(dem, dtype=np.float64)[None]) ** 2).sum(-1))
    return torch.from_numpy(m), torch.from_numpy(b)


def _pot_reference(h: torch.Tensor, kp: torch.Tensor, height: int, width: int, eps: float,
                   n: int) -> tuple[float, torch.Tensor]:
    """POT's loss and its unrolled-autodiff gradient w.r.t. the heatmap (float64).

    Zero-mass demanders (dot on a grid line) are passed as-is: POT's log-domain solver gives
    them ``log 0 = -inf`` potentials, i.e. removes them exactly. Zero suppliers make POT's
    ``log a`` backward produce NaN at those pixels only (0 * inf); their relu derivative is 0 in
    any case, so the gradient w.r.t. ``a`` is taken there as 0 and then chained through the
    relu + L1 normalisation by autograd.
    """
    m, b = _cost_matrix(kp, height, width)
    hh = h.detach().clone().requires_grad_(True)
    r = torch.relu(hh)
    a = r / r.sum()
    a_leaf = a.detach().clone().requires_grad_(True)
    loss = ot.sinkhorn2(a_leaf, b, m, reg=eps, method="sinkhorn_log", numItermax=n, stopThr=0,
                        warn=False)
    (ga,) = torch.autograd.grad(loss, a_leaf)
    assert torch.isfinite(ga[a_leaf > 0]).all()
    ga = torch.where(a_leaf > 0, ga, torch.zeros_like(ga))
    a.backward(ga)
    return float(loss), hh.grad


def _ours(h: torch.Tensor, kp: torch.Tensor, height: int, width: int, eps: float, n: int,
          dtype: torch.dtype) -> tuple[float, torch.Tensor]:
    loss_fn = HDMLoss(epsilon=eps, iterations=n, reduction="sum")
    hh = h.to(dtype).reshape(1, 1, height, width).clone().requires_grad_(True)
    loss = loss_fn(hh, kp.to(dtype).reshape(1, 1, 2), torch.ones(1, 1, dtype=dtype))
    loss.backward()
    return float(loss), hh.grad.reshape(-1).double()


def _decode(hm: torch.Tensor) -> torch.Tensor:
    """Paper Sec. 3.4 decoder on one (H, W) map: the 2x2 window of largest relu sum."""
    r = torch.relu(hm)
    sums = r[:-1, :-1] + r[:-1, 1:] + r[1:, :-1] + r[1:, 1:]
    i, j = divmod(int(sums.argmax()), sums.shape[1])
    win = r[i:i + 2, j:j + 2] / sums[i, j]
    x = j + win[:, 1].sum()
    y = i + win[1, :].sum()
    return torch.stack([x, y])


# ----------------------------------------------------------------------------------------------
# against POT

_DOTS = {
    "interior": lambda w, h: (2.3, 3.7),
    "x_on_grid_line": lambda w, h: (2.0, 3.7),  # two masses 0
    "y_on_grid_line": lambda w, h: (3.6, 2.0),
    "on_pixel_centre": lambda w, h: (3.0, 4.0),  # one demander left
    "border_right_bottom": lambda w, h: (w - 0.7, h - 0.6),  # demanders at x=W, y=H: off grid
    "border_exact_edge": lambda w, h: (w - 0.5, 1.25),
    "border_top_left": lambda w, h: (-0.5, -0.2),  # demanders at x=-1, y=-1
}
_POT_CASES = [
    # (dot, height, width, eps, iterations, heatmap kind)
    ("interior", 8, 6, 1.0, 1000, "zeros"),
    ("interior", 12, 10, 0.5, 50, "positive"),
    ("interior", 12, 10, 2.0, 50, "zeros"),
    ("x_on_grid_line", 8, 6, 0.5, 1000, "positive"),
    ("x_on_grid_line", 12, 10, 1.0, 50, "zeros"),
    ("y_on_grid_line", 8, 6, 2.0, 50, "positive"),
    ("on_pixel_centre", 8, 6, 1.0, 50, "zeros"),
    ("border_right_bottom", 8, 6, 1.0, 1000, "positive"),
    ("border_right_bottom", 12, 10, 0.5, 50, "zeros"),
    ("border_exact_edge", 8, 6, 2.0, 1000, "zeros"),
    ("border_exact_edge", 12, 10, 1.0, 50, "positive"),
    ("border_top_left", 8, 6, 0.5, 50, "zeros"),
    ("border_top_left", 12, 10, 2.0, 50, "positive"),
]


@pytest.mark.parametrize("dot,height,width,eps,n,kind", _POT_CASES)
def test_matches_pot_loss_and_gradient(dot: str, height: int, width: int, eps: float, n: int,
                                       kind: str) -> None:
    seed = zlib.crc32(repr((dot, height, eps, n, kind)).encode()) % 10_000
    h = _heatmap(kind, height, width, seed)
    kp = torch.tensor(_DOTS[dot](width, height), dtype=torch.float64)
    ref_loss, ref_grad = _pot_reference(h, kp, height, width, eps, n)
    scale = float(ref_grad.abs().max())
    for dtype, tol in ((torch.float64, 1e-8), (torch.float32, 1e-4)):
        loss, grad = _ours(h, kp, height, width, eps, n, dtype)
        assert abs(loss - ref_loss) <= tol * abs(ref_loss), (dtype, loss, ref_loss)
        assert float((grad - ref_grad).abs().max()) <= tol * scale, dtype
        assert torch.isfinite(grad).all()
        if kind == "zeros":
            assert (grad[h <= 0] == 0).all()


_UNIT_CASES = [
    # (dot, height, width, eps in input pixels, stride, iterations, heatmap kind)
    ("interior", 8, 6, 1.0, 4.0, 1000, "zeros"),
    ("interior", 12, 10, 2.0, 4.0, 200, "positive"),
    ("x_on_grid_line", 8, 6, 1.0, 4.0, 1000, "positive"),
    ("border_right_bottom", 8, 6, 1.0, 2.0, 1000, "zeros"),
    ("border_top_left", 12, 10, 3.0, 8.0, 1000, "positive"),
]


@pytest.mark.parametrize("dot,height,width,eps,stride,n,kind", _UNIT_CASES)
def test_input_pixel_epsilon_matches_pot_on_input_pixel_costs(dot: str, height: int, width: int, eps: float,
                                                              stride: float, n: int, kind: str) -> None:
    """``epsilon_units="input"``: POT on costs in input pixels (``M * stride``) with ``reg = eps``
    returns ``stride`` times our loss (which stays in heatmap pixels), for the value and the gradient."""
    seed = zlib.crc32(repr(("units", dot, height, eps, stride, n, kind)).encode()) % 10_000
    h = _heatmap(kind, height, width, seed)
    kp = torch.tensor(_DOTS[dot](width, height), dtype=torch.float64)
    m, b = _cost_matrix(kp, height, width)
    hh = h.detach().clone().requires_grad_(True)
    r = torch.relu(hh)
    a = r / r.sum()
    a_leaf = a.detach().clone().requires_grad_(True)
    ref = ot.sinkhorn2(a_leaf, b, m * stride, reg=eps, method="sinkhorn_log", numItermax=n, stopThr=0, warn=False)
    (ga,) = torch.autograd.grad(ref, a_leaf)
    a.backward(torch.where(a_leaf > 0, ga, torch.zeros_like(ga)))
    ref_loss, ref_grad = float(ref) / stride, hh.grad / stride
    for dtype, tol in ((torch.float64, 1e-8), (torch.float32, 1e-4)):
        loss_fn = HDMLoss(epsilon=eps, epsilon_units="input", stride=stride, iterations=n, reduction="sum")
        assert loss_fn.epsilon_effective == eps / stride
        x = h.to(dtype).reshape(1, 1, height, width).clone().requires_grad_(True)
        loss = loss_fn(x, kp.to(dtype).reshape(1, 1, 2), torch.ones(1, 1, dtype=dtype))
        loss.backward()
        grad = x.grad.reshape(-1).double()
        assert abs(float(loss) - ref_loss) <= tol * abs(ref_loss), (dtype, float(loss), ref_loss)
        assert float((grad - ref_grad).abs().max()) <= tol * float(ref_grad.abs().max()), dtype
    # and it is a different loss from the same eps read in heatmap pixels
    same_eps_heatmap, _ = _ours(h, kp, height, width, eps, n, torch.float64)
    assert abs(same_eps_heatmap - ref_loss) > 1e-6 * ref_loss


def test_epsilon_units_heatmap_ignores_stride() -> None:
    """The default units keep eps as given (the behaviour before the option existed)."""
    assert HDMLoss(epsilon=1.0).epsilon_effective == 1.0
    assert HDMLoss(epsilon=1.0, epsilon_units="heatmap", stride=4).epsilon_effective == 1.0
    assert HDMLoss(epsilon=1.0, epsilon_units="input", stride=4).epsilon_effective == 0.25


def test_cost_and_demanders_match_independent_construction() -> None:
    kp = torch.tensor([[2.3, 3.7], [5.0, 1.5], [-0.4, 7.49]], dtype=torch.float64)
    pos, mass = subpixel_demanders(kp)
    cost = transport_cost(pos, 8, 6)
    for j in range(kp.shape[0]):
        m, b = _cost_matrix(kp[j], 8, 6)
        torch.testing.assert_close(cost[j].T, m, rtol=0, atol=1e-12)
        torch.testing.assert_close(mass[j], b, rtol=0, atol=1e-15)
        # Eq. 4 properties: masses sum to 1 and their weighted mean is the dot.
        assert abs(float(mass[j].sum()) - 1) < 1e-15
        torch.testing.assert_close((mass[j][:, None] * pos[j]).sum(0), kp[j], rtol=0, atol=1e-14)


def test_subpixel_demanders_agree_with_codec() -> None:
    from pipeline.codecs.hdm import subpixel_demanders as codec_demanders

    kp = torch.tensor([[2.3, 3.7], [5.0, 1.5], [11.6, 0.0]], dtype=torch.float64)
    p1, m1 = subpixel_demanders(kp)
    p2, m2 = codec_demanders(kp)
    assert torch.equal(p1, p2) and torch.equal(m1, m2)


# ----------------------------------------------------------------------------------------------
# autograd


def test_gradcheck_float64() -> None:
    torch.manual_seed(0)
    hm = (torch.rand(1, 2, 5, 4, dtype=torch.float64) + 0.1).requires_grad_(True)
    kp = torch.tensor([[[1.3, 2.6], [2.7, 0.4]]], dtype=torch.float64)
    w = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    loss_fn = HDMLoss(epsilon=1.0, iterations=1000, reduction="sum")
    assert torch.autograd.gradcheck(lambda x: loss_fn(x, kp, w), (hm,), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_naive_demanders_closed_form() -> None:
    torch.manual_seed(1)
    height, width = 7, 6
    hm = torch.randn(2, 3, height, width, dtype=torch.float64).requires_grad_(True)
    kp = torch.tensor([[[2.4, 3.6], [0.5, 0.49], [5.2, 6.4]],
                       [[1.0, 1.0], [3.7, 2.2], [4.5, 5.5]]], dtype=torch.float64)
    w = torch.tensor([[1.0, 0.5, 2.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    loss = HDMLoss(demanders="naive", reduction="none")(hm, kp, w)
    # closed form, built independently: pixel containing the dot = floor(x + 0.5)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64),
                            torch.arange(width, dtype=torch.float64), indexing="ij")
    hm2 = hm.detach().clone().requires_grad_(True)
    r = torch.relu(hm2)
    a = r / r.sum((-1, -2), keepdim=True)
    cx = torch.floor(kp[..., 0] + 0.5)[..., None, None]
    cy = torch.floor(kp[..., 1] + 0.5)[..., None, None]
    ref = (a * torch.sqrt((xs - cx) ** 2 + (ys - cy) ** 2)).sum((-1, -2)) * w
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    loss.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(hm.grad, hm2.grad, rtol=1e-12, atol=1e-12)
    pos, _ = naive_demanders(kp[0, :2])
    assert pos[:, 0].tolist() == [[2.0, 4.0], [1.0, 0.0]]


def test_dot_on_pixel_centre_equals_naive() -> None:
    """With all the mass on one demander the plan is forced: both formulations coincide."""
    torch.manual_seed(2)
    hm = torch.rand(2, 2, 6, 5, dtype=torch.float64)
    kp = torch.tensor([[[2.0, 3.0], [0.0, 5.0]], [[4.0, 0.0], [1.0, 1.0]]], dtype=torch.float64)
    w = torch.ones(2, 2, dtype=torch.float64)
    sub = HDMLoss(reduction="none")(hm, kp, w)
    naive = HDMLoss(demanders="naive", reduction="none")(hm, kp, w)
    torch.testing.assert_close(sub, naive, rtol=1e-13, atol=1e-13)


# ----------------------------------------------------------------------------------------------
# edge cases


def test_zero_pixels_give_finite_gradient_and_zero_there() -> None:
    torch.manual_seed(3)
    hm = torch.randn(2, 3, 8, 6).requires_grad_(True)
    hm.data[..., 0, 0] = 1.0
    kp = torch.tensor([[2.5, 3.5], [0.0, 0.0], [5.9, 7.9]]).expand(2, 3, 2)
    loss = HDMLoss()(hm, kp, torch.ones(2, 3))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(hm.grad).all()
    assert (hm.grad[hm.detach() <= 0] == 0).all()


@pytest.mark.parametrize("demanders", ["subpixel", "naive"])
def test_dead_heatmaps_contribute_nothing_and_are_counted(demanders: str) -> None:
    torch.manual_seed(4)
    hm = torch.rand(2, 3, 6, 5)
    hm[0, 1] = 0.0  # all zero
    hm[1, 2] = -torch.rand(6, 5)  # all negative
    hm[1, 0] = -1.0  # dead but weight 0: not counted
    hm.requires_grad_(True)
    kp = torch.full((2, 3, 2), 2.3)
    w = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    loss_fn = HDMLoss(demanders=demanders, reduction="none")
    per = loss_fn(hm, kp, w)
    assert loss_fn.last_dead_joints == 2
    assert per[0, 1] == 0 and per[1, 2] == 0 and per[1, 0] == 0
    assert (per[0, 0] > 0) and (per[1, 1] > 0)
    per.sum().backward()
    assert torch.isfinite(hm.grad).all()
    assert (hm.grad[0, 1] == 0).all() and (hm.grad[1, 2] == 0).all() and (hm.grad[1, 0] == 0).all()


def test_unweighted_joints_are_masked_before_use() -> None:
    torch.manual_seed(5)
    hm = torch.rand(2, 3, 6, 5, requires_grad=True)
    kp = torch.tensor([[[2.3, 1.1], [math.nan, 1.0], [math.inf, -math.inf]],
                       [[1e9, -3e8], [4.2, 5.4], [2.0, 2.0]]])
    w = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    loss_fn = HDMLoss(reduction="none")
    per = loss_fn(hm, kp, w)
    assert torch.isfinite(per).all()
    assert per[0, 1] == 0 and per[0, 2] == 0 and per[1, 0] == 0
    per.sum().backward()
    assert torch.isfinite(hm.grad).all()
    assert (hm.grad[0, 1:] == 0).all() and (hm.grad[1, 0] == 0).all()
    # the masked joints do not change the others' values
    ref = HDMLoss(reduction="none")(hm.detach()[1:, 1:], kp[1:, 1:], w[1:, 1:])
    torch.testing.assert_close(per[1:, 1:].detach(), ref, rtol=1e-6, atol=0)
    # a weighted joint needs a finite dot
    with pytest.raises(ValueError, match="keypoints"):
        loss_fn(hm, kp, torch.ones(2, 3))
    # nothing weighted at all
    zero = HDMLoss()(hm, kp, torch.zeros(2, 3))
    assert zero == 0 and zero.requires_grad


def test_reductions_and_shapes() -> None:
    torch.manual_seed(6)
    hm = torch.rand(3, 4, 6, 5)
    kp = torch.rand(3, 4, 2) * torch.tensor([4.0, 5.0])
    w = torch.rand(3, 4)
    none = HDMLoss(reduction="none")(hm, kp, w)
    total = HDMLoss(reduction="sum")(hm, kp, w)
    mean = HDMLoss(reduction="mean")(hm, kp, w)
    assert none.shape == (3, 4) and total.shape == () and mean.shape == ()
    torch.testing.assert_close(total, none.sum())
    torch.testing.assert_close(mean, none.sum(1).mean())
    unweighted = HDMLoss(reduction="none")(hm, kp, torch.ones(3, 4))
    torch.testing.assert_close(none, unweighted * w)
    with pytest.raises(ValueError, match="keypoints"):
        HDMLoss()(hm, kp[:, :3], w)
    with pytest.raises(ValueError, match="weights"):
        HDMLoss()(hm, kp, w[:, :3])
    with pytest.raises(ValueError, match="heatmaps"):
        HDMLoss()(hm[0], kp, w)


@pytest.mark.parametrize("kwargs,name", [
    ({"demanders": "gaussian"}, "demanders"),
    ({"reduction": "avg"}, "reduction"),
    ({"epsilon": 0.0}, "epsilon"),
    ({"epsilon": -1.0}, "epsilon"),
    ({"epsilon": math.nan}, "epsilon"),
    ({"iterations": 0}, "iterations"),
    ({"iterations": 2.5}, "iterations"),
    ({"tolerance": -1e-3}, "tolerance"),
    ({"epsilon_units": "image"}, "epsilon_units"),
    ({"epsilon_units": "input"}, "stride"),
    ({"epsilon_units": "input", "stride": 0.0}, "stride"),
    ({"epsilon_units": "input", "stride": math.inf}, "stride"),
])
def test_argument_validation(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        HDMLoss(**kwargs)


def test_float32_and_float64_agree_and_keep_dtypes() -> None:
    torch.manual_seed(7)
    hm = torch.randn(2, 3, 10, 8, dtype=torch.float64)
    kp = torch.rand(2, 3, 2, dtype=torch.float64) * torch.tensor([7.0, 9.0], dtype=torch.float64)
    w = torch.ones(2, 3, dtype=torch.float64)
    h64 = hm.clone().requires_grad_(True)
    h32 = hm.float().requires_grad_(True)
    l64 = HDMLoss()(h64, kp, w)
    l32 = HDMLoss()(h32, kp.float(), w.float())
    assert l64.dtype == torch.float64 and l32.dtype == torch.float32
    l64.backward()
    l32.backward()
    assert h32.grad.dtype == torch.float32
    assert abs(float(l32) - float(l64)) < 1e-5 * float(l64)
    assert float((h32.grad.double() - h64.grad).abs().max()) < 1e-4 * float(h64.grad.abs().max())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype: torch.dtype) -> None:
    torch.manual_seed(8)
    hm32 = torch.rand(2, 3, 8, 6)
    hm = hm32.to(dtype).requires_grad_(True)
    kp = torch.rand(2, 3, 2) * 5
    w = torch.ones(2, 3)
    loss = HDMLoss()(hm, kp.to(dtype), w.to(dtype))
    assert loss.dtype == torch.float32
    loss.backward()
    assert hm.grad.dtype == dtype and torch.isfinite(hm.grad.float()).all()
    ref = HDMLoss()(hm.detach().float(), kp.to(dtype).float(), w)
    assert abs(float(loss) - float(ref)) < 1e-6 * float(ref)


def test_far_dot_and_small_epsilon_do_not_underflow() -> None:
    """Costs of hundreds of eps (and a tiny eps, which takes the log-domain path) stay exact."""
    torch.manual_seed(9)
    hm = torch.rand(1, 2, 8, 6, dtype=torch.float64)
    kp = torch.tensor([[[300.3, 200.6], [2.3, 3.4]]], dtype=torch.float64)
    w = torch.ones(1, 2, dtype=torch.float64)
    for eps in (1.0, 0.02):
        l64 = HDMLoss(epsilon=eps, reduction="none")(hm, kp, w)
        h32 = hm.float().requires_grad_(True)
        l32 = HDMLoss(epsilon=eps, reduction="none")(h32, kp.float(), w.float())
        l32.sum().backward()
        assert torch.isfinite(l32).all() and torch.isfinite(h32.grad).all()
        torch.testing.assert_close(l32.double(), l64, rtol=1e-5, atol=0)
    # far away the plan cost is the distance to the demanders, about the mean pixel distance
    a = hm[0, 0].reshape(-1) / hm[0, 0].sum()
    pos, mass = subpixel_demanders(kp[0, :1])
    dist = (transport_cost(pos, 8, 6)[0] * mass[0][:, None]).sum(0)
    assert abs(float(l64[0, 0]) - float((a * dist).sum())) < 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_early_stop_returns_the_bits_of_the_full_loop(dtype: torch.dtype) -> None:
    torch.manual_seed(10)
    hm = torch.randn(4, 6, 8, 6, dtype=dtype)
    kp = torch.rand(4, 6, 2, dtype=dtype) * torch.tensor([5.5, 7.5], dtype=dtype) - 0.25
    kp[0, 0] = torch.tensor([2.0, 3.5], dtype=dtype)
    w = torch.ones(4, 6, dtype=dtype)
    for n in (1, 2, 3, 7, 500, 999, 1000, 1500):
        out = []
        for early in (True, False):
            loss_fn = HDMLoss(iterations=n, reduction="none")
            loss_fn._early_stop = early
            x = hm.clone().requires_grad_(True)
            per = loss_fn(x, kp, w)
            per.sum().backward()
            out.append((per.detach(), x.grad, loss_fn.last_iterations_run))
        assert torch.equal(out[0][0], out[1][0]), n
        assert torch.equal(out[0][1], out[1][1]), n
        assert out[1][2] == n
        if n >= 500:
            assert out[0][2] < 200  # converged to a float cycle long before
    # 500 / 1000 / 1500 give identical results (the map reached its float fixed point/cycle)


def test_potentials_reach_float_cycles_and_parity_is_respected() -> None:
    torch.manual_seed(11)
    a = torch.rand(64, 48, dtype=torch.float64)
    a = a / a.sum(-1, keepdim=True)
    kp = torch.rand(64, 2, dtype=torch.float64) * torch.tensor([5.0, 7.0], dtype=torch.float64)
    pos, mass = subpixel_demanders(kp)
    for n in (400, 401, 402, 403):
        fast = sinkhorn_potentials(a, pos, mass, 8, 6, 1.0, n)
        full = sinkhorn_potentials(a, pos, mass, 8, 6, 1.0, n, early_stop=False)
        assert torch.equal(fast.g, full.g)
        assert fast.iterations_run < n and (fast.period >= 1).all()
        assert fast.marginal_error < 1e-12


def test_tolerance_stops_early_and_close() -> None:
    torch.manual_seed(12)
    hm = torch.rand(2, 4, 12, 10, dtype=torch.float64)
    kp = torch.rand(2, 4, 2, dtype=torch.float64) * 8
    w = torch.ones(2, 4, dtype=torch.float64)
    exact = HDMLoss()(hm, kp, w)
    loose = HDMLoss(tolerance=1e-4)
    approx = loose(hm, kp, w)
    assert loose.last_iterations_run < 20
    assert abs(float(approx) - float(exact)) < 1e-3 * float(exact)


def test_functional_core_reports_info() -> None:
    hm = torch.rand(3, 30, dtype=torch.float64)
    pos, mass = subpixel_demanders(torch.tensor([[1.2, 2.2], [3.0, 1.5], [0.0, 0.0]], dtype=torch.float64))
    info: dict = {}
    loss = sinkhorn_transport_cost(hm, pos, mass, 6, 5, 1.0, 1000, info=info)
    assert loss.shape == (3,)
    assert info["iterations_run"] < 1000 and info["marginal_error"] < 1e-12
    assert not info["dead"].any()


# ----------------------------------------------------------------------------------------------
# it learns


def test_gradient_descent_moves_the_decoded_peak_to_the_dot() -> None:
    """A free heatmap trained by the loss alone ends with its 2x2 decode next to the dot.

    (At eps = 1 heatmap pixel the minimiser of <C, P_eps> is a slightly sharpened version of the
    demanders, so the decode converges to within ~0.1 px, not exactly onto the dot.)
    """
    torch.manual_seed(13)
    dot = torch.tensor([[[4.3, 5.6]]])
    param = torch.nn.Parameter(torch.rand(1, 1, 10, 8))
    opt = torch.optim.Adam([param], lr=0.05)
    loss_fn = HDMLoss()
    start = float((_decode(param.detach()[0, 0]) - dot[0, 0]).norm())
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = loss_fn(param, dot, torch.ones(1, 1))
        loss.backward()
        opt.step()
        losses.append(float(loss))
    end = float((_decode(param.detach()[0, 0]) - dot[0, 0]).norm())
    assert losses[-1] < 0.5 * losses[0]
    assert end < 0.15 and end < start / 5


# ----------------------------------------------------------------------------------------------
# MSE baseline


@pytest.mark.parametrize("use_weight", [True, False])
def test_joints_mse_matches_hrnet_loop(use_weight: bool) -> None:
    torch.manual_seed(14)
    pred = torch.rand(3, 4, 6, 5)
    gt = torch.rand(3, 4, 6, 5)
    w = torch.tensor([[1.0, 0.0, 1.0, 1.0]] * 3)
    loss = JointsMSELoss(use_target_weight=use_weight)(pred, gt, w)
    # HRNet lib/core/loss.py, written out
    ref = 0.0
    p, g = pred.reshape(3, 4, -1), gt.reshape(3, 4, -1)
    for k in range(4):
        pk, gk = p[:, k], g[:, k]
        if use_weight:
            pk, gk = pk * w[:, k:k + 1], gk * w[:, k:k + 1]
        ref += 0.5 * torch.nn.functional.mse_loss(pk, gk)
    torch.testing.assert_close(loss, ref / 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    torch.manual_seed(15)
    hm = torch.randn(2, 3, 8, 6)
    kp = torch.rand(2, 3, 2) * 5
    w = torch.ones(2, 3)
    cpu = HDMLoss()(hm, kp, w)
    x = hm.cuda().requires_grad_(True)
    gpu = HDMLoss()(x, kp.cuda(), w.cuda())
    gpu.backward()
    assert torch.isfinite(x.grad).all()
    assert abs(float(gpu) - float(cpu)) < 1e-5 * float(cpu)


def test_dead_joints_softmax_revives_without_touching_live_joints():
    torch.manual_seed(0)
    h = torch.randn(2, 3, 8, 6, dtype=torch.float64)
    h[0, 1] = -torch.rand(8, 6, dtype=torch.float64) - 0.1  # dead: no positive pixel
    kp = torch.tensor([[[2.3, 4.6], [3.2, 1.7], [4.5, 5.5]]] * 2, dtype=torch.float64)
    w = torch.ones(2, 3, dtype=torch.float64)
    zero = HDMLoss(reduction="none")(h, kp, w)
    soft_loss = HDMLoss(reduction="none", dead_joints="softmax")
    h1 = h.clone().requires_grad_(True)
    soft = soft_loss(h1, kp, w)
    assert soft_loss.last_dead_joints == 1
    live = torch.ones(2, 3, dtype=torch.bool)
    live[0, 1] = False
    assert torch.equal(soft[live], zero[live]) and zero[0, 1] == 0
    # the dead joint's value is the transport cost of softmax(h), which is positive and lifts pixels near the dot
    expected = HDMLoss(reduction="none")(torch.softmax(h[0, 1].reshape(1, 1, -1), -1).reshape(1, 1, 8, 6),
                                         kp[:1, 1:2], w[:1, 1:2])
    assert torch.allclose(soft[0, 1], expected[0, 0])
    soft[0, 1].backward()
    g = h1.grad[0, 1]
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert g[2, 3] < 0 < g[7, 0]  # descent raises the pixel under the dot (3.2, 1.7), lowers a far one
    with pytest.raises(ValueError, match="dead_joints"):
        HDMLoss(dead_joints="maybe")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chunking_of_joints_does_not_change_the_result(dtype: torch.dtype, monkeypatch) -> None:
    """The solver works on chunks of joints sized for the cache; one chunk or many agree, and the
    early stop stays bit-exact with many chunks (each stopping on its own)."""
    from pipeline.losses import sinkhorn as sk

    torch.manual_seed(16)
    hm = torch.randn(3, 5, 12, 10, dtype=dtype)
    kp = torch.rand(3, 5, 2, dtype=dtype) * torch.tensor([9.0, 11.0], dtype=dtype)
    w = torch.ones(3, 5, dtype=dtype)
    out = {}
    for name, budget, heatmaps in (("one", 1 << 30, 1 << 10), ("many", 1, 1)):
        monkeypatch.setattr(sk, "_CHUNK_BYTES", budget)
        monkeypatch.setattr(sk, "_CHUNK_HEATMAPS", heatmaps)
        assert len(sk._chunk_slices(15, 4, 120, hm.element_size(), hm.device)) == (1 if name == "one" else 15)
        res = []
        for early in (True, False):
            fn = HDMLoss(iterations=300, reduction="none")
            fn._early_stop = early
            x = hm.clone().requires_grad_(True)
            loss = fn(x, kp, w)
            loss.sum().backward()
            res.append((loss.detach(), x.grad))
        assert torch.equal(res[0][0], res[1][0]) and torch.equal(res[0][1], res[1][1])
        out[name] = res[0]
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out["one"][0], out["many"][0], rtol=tol, atol=0)
    torch.testing.assert_close(out["one"][1], out["many"][1], rtol=tol, atol=tol * float(out["one"][1].abs().max()))
