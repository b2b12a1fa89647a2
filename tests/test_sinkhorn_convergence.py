"""Iterations to a tolerance, per joint (Table 5's convergence claim measured on heatmaps): one solve
must give, for every tolerance, the count the solver's own tolerance stop reaches on that joint alone."""
from __future__ import annotations

import torch

from pipeline.losses import sinkhorn as S

H, W = 16, 12
TOLS = [1e-2, 1e-3, 1e-4, 1e-6]


def _demander_heatmap(pos: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    """Suppliers equal to the demanders: each demander's mass on its own pixel."""
    a = torch.zeros(1, H * W, dtype=torch.float64)
    for (x, y), m in zip(pos[0].tolist(), mass[0].tolist()):
        a[0, int(y) * W + int(x)] += m
    return a


def test_counts_match_the_solvers_tolerance_stop_joint_by_joint():
    g = torch.Generator().manual_seed(0)
    kp = torch.tensor([[5.3, 7.6], [0.2, 14.9], [10.7, 3.1]], dtype=torch.float64)
    pos, mass = S.subpixel_demanders(kp)
    a = torch.rand(3, H * W, generator=g, dtype=torch.float64) ** 4
    a = a / a.sum(-1, keepdim=True)
    for eps in (1.0, 0.25):
        got = S.iterations_to_tolerance(a, pos, mass, H, W, eps, 1000, TOLS)
        for j in range(3):
            want = [S.sinkhorn_potentials(a[j:j + 1], pos[j:j + 1], mass[j:j + 1], H, W, eps, 1000,
                                          tolerance=t).iterations_run for t in TOLS]
            assert got[j].tolist() == want
        assert (got[:, 1:] >= got[:, :-1]).all()  # a smaller tolerance never needs fewer updates


def test_a_heatmap_on_the_demanders_converges_at_once_a_uniform_one_does_not():
    kp = torch.tensor([[5.3, 7.6]], dtype=torch.float64)
    pos, mass = S.subpixel_demanders(kp)
    on_dots = S.iterations_to_tolerance(_demander_heatmap(pos, mass), pos, mass, H, W, 0.25, 1000, TOLS)
    uniform = S.iterations_to_tolerance(torch.full((1, H * W), 1.0 / (H * W), dtype=torch.float64),
                                        pos, mass, H, W, 0.25, 1000, TOLS)
    assert on_dots[0, 0] == 1 and uniform[0, 0] > 3
    # one active demander (dot on a pixel centre): every plan ships all mass there, so the first update
    # already matches the marginal exactly, whatever the tolerance
    pos1, mass1 = S.subpixel_demanders(torch.tensor([[4.0, 9.0]], dtype=torch.float64))
    assert S.iterations_to_tolerance(torch.full((1, H * W), 1.0 / (H * W), dtype=torch.float64),
                                     pos1, mass1, H, W, 1.0, 1000, TOLS).tolist() == [[1, 1, 1, 1]]


def test_a_tolerance_not_reached_counts_the_cap():
    kp = torch.tensor([[5.3, 7.6]], dtype=torch.float64)
    pos, mass = S.subpixel_demanders(kp)
    a = torch.full((1, H * W), 1.0 / (H * W), dtype=torch.float64)
    got = S.iterations_to_tolerance(a, pos, mass, H, W, 0.25, 5, [1e-2, 1e-30])
    assert got.tolist() == [[5, 5]]  # 1e-2 needs 7 updates at this epsilon (see above), 1e-30 never
    assert S.iterations_to_tolerance(a, pos, mass, H, W, 0.25, 1, [1e-2]).tolist() == [[1]]
