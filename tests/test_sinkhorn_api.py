"""The loss module's public plan and implicit gradient (pipeline.losses.sinkhorn.transport_plan,
implicit_supplier_gradient) against POT: the entropic plan of ``ot.sinkhorn`` and the unrolled-autodiff
gradient of ``ot.sinkhorn2`` (float64), on the factor path (eps of 1 and 1/4 heatmap pixel) and on the
log-domain path a small eps takes in float32."""
from __future__ import annotations

import pytest
import torch

from pipeline.losses.sinkhorn import (_use_factor_path, implicit_supplier_gradient, sinkhorn_potentials,
                                      subpixel_demanders, transport_plan)

ot = pytest.importorskip("ot")

H, W = 5, 4


@pytest.mark.parametrize("eps, dtype, factor_path, atol_plan, atol_grad", [
    (1.0, torch.float64, True, 1e-12, 1e-9),
    (0.25, torch.float64, True, 1e-12, 1e-9),
    (0.05, torch.float32, False, 1e-6, 1e-4),  # spread / eps beyond float32's range for exp(-C/eps)
])
def test_plan_and_implicit_gradient_match_pot(eps, dtype, factor_path, atol_plan, atol_grad):
    torch.manual_seed(0)
    kp = torch.tensor([[1.3, 2.6], [2.2, 0.4]], dtype=dtype)
    pos, mass = subpixel_demanders(kp)
    a = torch.rand(2, H * W, dtype=dtype) + 0.05
    a = a / a.sum(-1, keepdim=True)
    res = sinkhorn_potentials(a, pos, mass, H, W, eps, 3000)
    assert res.factor_path is factor_path and _use_factor_path(pos, eps) is factor_path
    q, cost = transport_plan(pos, res.active, res.g, H, W, eps)  # the path chosen as the solver chose it
    grad = implicit_supplier_gradient(a, q, cost.clone(), res.b, res.active).double()
    a, q, cost, mass = a.double(), q.double(), cost.double(), mass.double()
    for j in range(2):
        kw = dict(reg=eps, method="sinkhorn_log", numItermax=1000, stopThr=0, warn=False)
        plan = ot.sinkhorn(a[j], mass[j], cost[j].T, **kw)
        torch.testing.assert_close(a[j][:, None] * q[j].T, plan, rtol=0, atol=atol_plan)
        a_leaf = a[j].clone().requires_grad_(True)
        (ref,) = torch.autograd.grad(ot.sinkhorn2(a_leaf, mass[j], cost[j].T, **kw), a_leaf)
        # defined up to a per-joint constant (the masses sum to 1)
        torch.testing.assert_close(grad[j] - grad[j].mean(), ref - ref.mean(), rtol=0, atol=atol_grad)


def test_a_single_demander_always_takes_the_factor_path():
    one = torch.zeros(3, 1, 2, dtype=torch.float32)
    assert _use_factor_path(one, 1e-6)
