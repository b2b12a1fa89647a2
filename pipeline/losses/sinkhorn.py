"""Numerical core of the HDM loss: demanders, costs, Sinkhorn on 4 potentials, implicit gradient.

Everything works on batches of ``J`` independent joints (``J = B*K`` flattened). For one joint:

* suppliers ``a`` (``N = H*W``): ``relu(h) / sum(relu(h))`` (paper Eq. 3);
* demanders: ``M`` points (4 sub-pixel demanders, Eq. 4, or 1 naive one) with masses ``b``;
* cost ``C[n, m]``: Euclidean distance in heatmap pixels between pixel centre ``n`` and demander
  ``m`` (pixel ``(row i, col j)`` has centre ``(x=j, y=i)``, docs/conventions.md). It is computed
  from coordinates whenever needed, never kept as an ``N x M`` input;
* the entropic plan ``P[n, m] = a_n q[n, m]`` with ``q_n = softmax_m((g_m - C[n, m]) / eps)``,
  where the ``M`` potentials ``g`` solve ``s(g) = b``, ``s_m = sum_n a_n q[n, m]``;
* the loss ``L = <C, P> = sum_n a_n cbar_n``, ``cbar_n = sum_m q[n, m] C[n, m]`` (what POT's
  ``sinkhorn2`` returns; not the regularised objective).

See /work/shared/notes/hdm-math.md for the derivations. Why it is organised this way:

* **Only the M demander potentials are iterated.** The supplier potentials are eliminated in
  closed form (every row of ``P`` sums to ``a_n`` exactly), so the state is a ``J x M`` tensor.
* **No underflow.** Inside the softmax, subtracting the per-pixel minimum cost
  ``Cmin_n = min_m C[n, m]`` changes nothing and bounds the exponents to ``[-spread/eps, 0]``
  where ``spread`` is the demander set's diameter (``sqrt 2`` for adjacent demanders). The
  factors ``E[n, m] = exp(-(C[n, m] - Cmin_n)/eps)`` are therefore computed once per call and
  each iteration is two small contractions over the pixels (no per-iteration ``exp`` on
  ``J x N x M``). The plain kernel ``exp(-C/eps)`` would underflow in float32 beyond costs of
  ~87 eps. When ``spread/eps`` is so large that even ``E`` could underflow (tiny ``eps``), a
  log-domain path (softmax per pixel and per iteration) is used instead.
* **Counting iterations like POT.** Iteration 1 is the demander update from zero supplier
  potentials, ``g = eps (log b - LSE_n(-C[n, m]/eps))`` (standard Sinkhorn from ``u = 1``),
  iterations 2.. are ``g_m += eps (log b_m - log s_m(g))``. So ``iterations = n`` reproduces
  ``ot.sinkhorn2(a, b, M, reg=eps, method="sinkhorn_log", numItermax=n, stopThr=0)``.
* **Gauge.** ``q`` is invariant to adding a constant to ``g``; after every update the largest
  active potential is subtracted so the state cannot drift and the float fixed point exists.
* **Zero-mass demanders** (dot exactly on a grid line) are removed: their ``u_m = 0``, their
  potential is held at 0 and they are excluded from the gradient system.
* **Backward without iterates.** Implicit differentiation at the fixed point needs one
  ``(M-1) x (M-1)`` solve per joint; only ``h`` and ``g`` are saved (memory ``O(J*N)``), the
  ``J x N x M`` temporaries are rebuilt from coordinates in the backward.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "subpixel_demanders",
    "naive_demanders",
    "pixel_centres",
    "transport_cost",
    "sinkhorn_potentials",
    "SinkhornResult",
    "transport_plan",
    "implicit_supplier_gradient",
    "SinkhornTransportCost",
    "sinkhorn_transport_cost",
]

# Sub-pixel demander order: (fx, fy), (fx+1, fy), (fx, fy+1), (fx+1, fy+1).
_OFFSETS = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0))

# Longest bitwise cycle of the whole batch's state that the early stop recognises (a batch
# whose joints have periods 1 and 2 has period 2; periods up to 4 cover lcm of {1, 2, 4} and
# {1, 3}). A longer cycle just runs the full iteration count, which is always correct.
_MAX_PERIOD = 8


def subpixel_demanders(keypoints: Tensor) -> tuple[Tensor, Tensor]:
    """The four sub-pixel demanders of paper Eq. 4.

    ``keypoints (J, 2)`` as ``(x, y)`` in heatmap pixels -> ``positions (J, 4, 2)``, the pixel
    centres ``(fx, fy), (fx+1, fy), (fx, fy+1), (fx+1, fy+1)`` with ``fx = floor(x)``, and
    ``masses (J, 4) = (1 - |x - x_i|)(1 - |y - y_i|)`` (bilinear weights: they sum to 1 and their
    weighted mean is the dot, the property the paper's decoder inverts). A dot on a grid line
    gives masses that are exactly 0; a dot in the last half pixel has demanders off the grid.
    Both are legitimate and handled by the solver.
    """
    base = torch.floor(keypoints)
    off = torch.tensor(_OFFSETS, dtype=keypoints.dtype, device=keypoints.device)
    pos = base[:, None, :] + off
    d = (1.0 - (keypoints[:, None, :] - pos).abs()).clamp(min=0.0)
    return pos, d[..., 0] * d[..., 1]


def naive_demanders(keypoints: Tensor) -> tuple[Tensor, Tensor]:
    """The naive single demander (paper Fig. 2a, Table 4): the centre of the pixel holding the dot.

    Pixel ``j`` covers ``[j - 0.5, j + 0.5)``, so the centre is ``floor(x + 0.5)`` (ties, i.e. a
    dot exactly on a pixel edge, go to the right/lower pixel; ``torch.round`` would round half to
    even, which is not a geometric rule). Returns ``positions (J, 1, 2)``, ``masses (J, 1) = 1``.
    """
    pos = torch.floor(keypoints + 0.5)[:, None, :]
    return pos, torch.ones(pos.shape[:2], dtype=keypoints.dtype, device=keypoints.device)


def pixel_centres(height: int, width: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(x, y)`` of the ``N = H*W`` pixel centres in row-major (flattened heatmap) order."""
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device),
        torch.arange(width, dtype=dtype, device=device),
        indexing="ij",
    )
    return xs.reshape(-1), ys.reshape(-1)


def transport_cost(positions: Tensor, height: int, width: int) -> Tensor:
    """Euclidean cost ``C (J, N, M)`` from every pixel centre to every demander, in pixels.

    Built on demand from the coordinates (the solver and the backward call it; nothing keeps it
    between the two).
    """
    xs, ys = pixel_centres(height, width, positions.dtype, positions.device)
    dx = xs[None, :, None] - positions[:, None, :, 0]
    dy = ys[None, :, None] - positions[:, None, :, 1]
    return torch.sqrt(dx * dx + dy * dy)


def _prepare_masses(masses: Tensor) -> tuple[Tensor, Tensor]:
    """Active-demander mask and masses renormalised to sum 1.

    A mass below ``finfo.eps**2`` (e.g. a dot ``1e-20`` px from a grid line) is treated as 0:
    it changes the loss by less than float resolution but would need a potential of
    ``eps*log(mass)``, far outside the range the other potentials live in. Renormalising makes
    ``sum b = sum a = 1`` hold exactly enough for a fixed point ``s = b`` to exist.
    """
    tiny = torch.finfo(masses.dtype).eps ** 2
    b = torch.where(masses > tiny, masses, torch.zeros_like(masses))
    b = b / b.sum(-1, keepdim=True)
    return b > 0, b


def _shifted_logits(positions: Tensor, height: int, width: int, eps: float) -> tuple[Tensor, Tensor]:
    """``-(C - Cmin)/eps`` (J, N, M), every entry in ``[-spread/eps, 0]``, and ``Cmin`` (J, N)."""
    c = transport_cost(positions, height, width)
    cmin = c.amin(-1)
    c.sub_(cmin[..., None]).div_(-eps)
    return c, cmin


def _gauge(g: Tensor, active: Tensor) -> Tensor:
    """Subtract the largest active potential; inactive entries are held at exactly 0."""
    gmax = torch.where(active, g, torch.full_like(g, -math.inf)).amax(-1, keepdim=True)
    return torch.where(active, g - gmax, torch.zeros_like(g))


def _bits(t: Tensor) -> Tensor:
    """Integer view for a truly bitwise comparison (``torch.equal`` on floats says -0 == 0)."""
    return t.view(torch.int64 if t.element_size() == 8 else torch.int32)


def _underflow_safe_exponent(dtype: torch.dtype) -> float:
    """Largest ``spread/eps`` for which the precomputed factors ``E`` stay far from underflow.

    A quarter of ``-log(tiny)`` (~22 in float32, ~177 in float64) leaves room for the products
    ``u_m E[n, m]`` of the potentials' factors with ``E`` as well.
    """
    return -math.log(torch.finfo(dtype).tiny) / 4.0


@dataclass
class SinkhornResult:
    """Output of :func:`sinkhorn_potentials`.

    ``g``: the gauge-fixed potentials after exactly the requested number of iterations (or the
    tolerance stop); ``active``: demanders with nonzero mass; ``b``: renormalised masses;
    ``iterations_run``: updates actually computed (the early stop may skip provably idle ones);
    ``period (J,)``: per joint, 1 for a bitwise fixed point, 2 for a bitwise 2-cycle, ..., 0
    when no cycle was detected (full loop, or tolerance stop); ``marginal_error``: ``max |s - b|`` at the last
    update computed (over live joints and active demanders).
    """

    g: Tensor
    active: Tensor
    b: Tensor
    iterations_run: int
    period: Tensor
    marginal_error: float


@torch.no_grad()
def sinkhorn_potentials(
    a: Tensor,
    positions: Tensor,
    masses: Tensor,
    height: int,
    width: int,
    epsilon: float,
    iterations: int,
    tolerance: float | None = None,
    early_stop: bool = True,
) -> SinkhornResult:
    """Run ``iterations`` Sinkhorn updates on the demander potentials ``g (J, M)``.

    ``a (J, N)``: supplier masses, each row nonnegative and summing to 1 (callers give dead
    joints any valid row, e.g. uniform, and discard their result). ``positions (J, M, 2)``,
    ``masses (J, M)``: the demanders.

    Early stop (``early_stop=True``), and why it returns exactly the bits of the full loop:
    the update ``g <- F(g)`` is a deterministic function of ``g`` alone (``a``, ``C``, ``b`` and
    the tensor shapes are fixed for the whole call, and every iteration runs the same vectorised
    ops over all joints, so the float rounding is the same every time). Each joint's row is
    computed from that joint's data only (row-wise ops, per-matrix batched products), so every
    joint follows its own deterministic sequence ``g_{t+1} = F_j(g_t)``. Hence if after update
    ``t`` a joint's state equals, bit for bit, its state ``p`` updates earlier, its sequence is
    periodic with period ``p`` from there on and the iterate the full count ``n`` would end on is
    already known: ``g_n = g_{t - p + ((n - t) mod p)}`` (kept in a ring of the last
    ``_MAX_PERIOD`` states). ``p = 1`` is a float fixed point, ``p = 2`` the rounding
    oscillation between two neighbouring floats; longer cycles of a few ulps also occur (more
    often in float64). Once every joint is resolved the loop stops; the special case "all
    joints unchanged / all equal to two updates ago" is the batch-wide fixed point / 2-cycle.
    Joints are never dropped from the computation while iterating (resolved ones keep being
    updated with the others), because changing shapes could change the rounding. The check is
    a handful of ops on the ``J x M`` state per iteration (on CUDA, one host sync).

    ``tolerance`` (opt-in, approximate): stop as soon as ``max |s_m(g) - b_m| < tolerance`` over
    live joints and active demanders, returning that ``g``.
    """
    dtype = a.dtype
    eps = float(epsilon)
    active, b = _prepare_masses(masses.to(dtype))
    logb = torch.log(torch.where(active, b, torch.ones_like(b)))
    neg_shift, cmin = _shifted_logits(positions.to(dtype), height, width, eps)

    # Path choice from the demander set's diameter: exponents live in [-spread/eps, 0].
    pos = positions.to(dtype)
    spread = float((pos[:, :, None, :] - pos[:, None, :, :]).norm(dim=-1).amax()) if pos.shape[1] > 1 else 0.0
    fast = spread / eps <= _underflow_safe_exponent(dtype)
    zero = torch.zeros((), dtype=dtype, device=a.device)
    tiny = torch.finfo(dtype).tiny

    if fast:
        kernel = neg_shift.exp_()  # E[n, m] in [exp(-spread/eps), 1]
        del neg_shift
        # Iteration 1 (POT's first v-update from u = 0): LSE_n(-C[n, m]/eps), stably as
        # -c0/eps + log sum_n exp(-(Cmin_n - c0)/eps) E[n, m] with c0 = min_n Cmin_n.
        c0 = cmin.amin(-1, keepdim=True)
        wpix = torch.exp((c0 - cmin) / eps)
        lse = torch.log(torch.matmul(wpix[:, None, :], kernel)[:, 0, :]) - c0 / eps
    else:
        kernel = neg_shift  # log-domain: keep -(C - Cmin)/eps
        lse = torch.logsumexp(neg_shift - (cmin / eps)[..., None], dim=1)
    del cmin
    g = _gauge(eps * (logb - lse), active)

    def marginal(g: Tensor) -> Tensor:
        """``s_m = sum_n a_n q[n, m]`` for the current potentials."""
        if fast:
            u = torch.where(active, torch.exp(g / eps), zero)  # gauge: max active u is 1
            denom = torch.matmul(kernel, u[..., None])[..., 0]  # (J, N) >= exp(-spread/eps)
            t = torch.matmul((a / denom)[:, None, :], kernel)[:, 0, :]
            return u * t
        logits = torch.where(active[:, None, :], kernel + (g / eps)[:, None, :], -math.inf)
        q = torch.softmax(logits, dim=-1)
        return torch.matmul(a[:, None, :], q)[:, 0, :]

    live = a.sum(-1, keepdim=True) > 0
    iterations_run = 1
    err = math.nan
    s: Tensor | None = None
    nj = g.shape[0]
    period = torch.zeros(nj, dtype=torch.long, device=g.device)
    if early_stop and iterations > 1:
        # Ring buffer of the last P states: slot t % P holds g_t.
        big = _MAX_PERIOD + 1
        ring_bits = torch.zeros((_MAX_PERIOD,) + g.shape, dtype=_bits(g).dtype, device=g.device)
        ring = torch.zeros((_MAX_PERIOD,) + g.shape, dtype=dtype, device=g.device)
        ring_bits[1 % _MAX_PERIOD] = _bits(g)
        ring[1 % _MAX_PERIOD] = g
        slots = torch.arange(_MAX_PERIOD, device=g.device)
        resolved = torch.zeros(nj, dtype=torch.bool, device=g.device)
        final = g.clone()
    for it in range(2, iterations + 1):
        s = marginal(g)
        if tolerance is not None:
            err = float(torch.where(active & live, (s - b).abs(), zero).amax())
            if err < tolerance:
                break
        step = torch.where(active, logb - torch.log(s.clamp_min(tiny)), zero)
        g = _gauge(g + eps * step, active)
        iterations_run = it
        if not early_stop:
            continue
        # Per joint: smallest lag p <= P with g_t == g_{t-p} bitwise (t - p >= 1).
        lag = (it - slots) % _MAX_PERIOD
        lag = torch.where(lag == 0, _MAX_PERIOD, lag)
        valid = (it - lag) >= 1
        same = (ring_bits == _bits(g)[None]).all(-1) & valid[:, None]
        p = torch.where(same, lag[:, None], big).amin(0)
        hit = (p < big) & ~resolved
        # The full loop would end on g_{t - p + ((n - t) mod p)} for this joint.
        p_safe = torch.where(hit, p, 1)
        src = (it - p_safe + (iterations - it) % p_safe) % _MAX_PERIOD
        pick = ring.gather(0, src[None, :, None].expand(1, nj, g.shape[1]))[0]
        final = torch.where(hit[:, None], pick, final)
        period = torch.where(hit, p, period)
        resolved = resolved | hit
        if bool(resolved.all()):
            g = final
            break
        ring_bits[it % _MAX_PERIOD] = _bits(g)
        ring[it % _MAX_PERIOD] = g
    else:
        if early_stop and iterations > 1:
            # Loop ran to the end: resolved joints take their predicted final state (equal to
            # the current one by construction), the others are already at g_n.
            g = torch.where(resolved[:, None], final, g)
    if s is not None and tolerance is None:
        err = float(torch.where(active & live, (s - b).abs(), zero).amax())
    return SinkhornResult(g=g, active=active, b=b, iterations_run=iterations_run,
                          period=period, marginal_error=err)


def transport_plan(positions: Tensor, active: Tensor, g: Tensor, height: int, width: int,
                   epsilon: float) -> tuple[Tensor, Tensor]:
    """Per-pixel conditional plan ``q (J, N, M)`` (rows sum to 1) and the cost ``C (J, N, M)``.

    Uses a softmax with per-pixel max subtraction, which is exact in the log domain for any
    ``eps``; inactive demanders get probability 0.
    """
    c = transport_cost(positions, height, width)
    logits = torch.where(active[:, None, :], (g[:, None, :] - c) / epsilon, -math.inf)
    return torch.softmax(logits, dim=-1), c


def implicit_supplier_gradient(a: Tensor, q: Tensor, c: Tensor, b: Tensor, active: Tensor) -> Tensor:
    """``dL/da (J, N)`` at the Sinkhorn fixed point, up to a per-joint additive constant.

    With ``cbar_n = q_n . C_n``, ``r_m = sum_n a_n q[n, m] (C[n, m] - cbar_n)`` and
    ``Hm = diag(b) - sum_n a_n q_n q_n^T`` (symmetric PSD, null vector 1 on the active set),
    solve ``Hm w = r`` on the active demanders with one of them (the largest mass) pinned to
    ``w = 0`` (the gauge), then ``dL/da_n = cbar_n - q_n . w``. Inactive and pinned demanders
    are replaced by identity rows/columns and zero right-hand sides, so one fixed-shape batched
    solve handles every active set (1 to M demanders). No ``1/a`` appears, so zero suppliers
    are fine. The additive constant is removed by the L1 normalisation's Jacobian.
    """
    m = q.shape[-1]
    cbar = (q * c).sum(-1)
    aq = a[..., None] * q
    r = (aq * (c - cbar[..., None])).sum(1)
    hm = torch.diag_embed(b) - torch.matmul(aq.transpose(1, 2), q)
    pin = torch.where(active, b, torch.full_like(b, -1.0)).argmax(-1)
    keep = active & (torch.arange(m, device=b.device) != pin[:, None])
    both = keep[:, :, None] & keep[:, None, :]
    eye = torch.eye(m, dtype=hm.dtype, device=hm.device).expand_as(hm)
    w = torch.linalg.solve(torch.where(both, hm, eye), torch.where(keep, r, torch.zeros_like(r)))
    return cbar - torch.matmul(q, w[..., None])[..., 0]


class SinkhornTransportCost(torch.autograd.Function):
    """Per-joint ``<C, P>`` of the entropic plan between ``relu(h)/|relu(h)|_1`` and the demanders.

    Forward under ``no_grad`` (no iterate is recorded), backward by the implicit formula of
    :func:`implicit_supplier_gradient` followed by the Jacobian of relu + L1 normalisation:
    ``dL/dh_j = (G_j - sum_n a_n G_n) / sum relu(h)`` for ``h_j > 0``, else 0. Joints whose
    ``relu(h)`` is all zero ("dead") have loss 0 and gradient 0.

    Inputs: ``h (J, N)`` float32/float64; ``positions (J, M, 2)``; ``masses (J, M)``; python
    ``height, width, epsilon, iterations, tolerance, early_stop``; ``info``: a dict that receives
    ``iterations_run``, ``period``, ``dead`` (tensor mask) and ``marginal_error``.
    """

    @staticmethod
    def forward(ctx: Any, h: Tensor, positions: Tensor, masses: Tensor, height: int, width: int,
                epsilon: float, iterations: int, tolerance: float | None, early_stop: bool,
                info: dict | None) -> Tensor:
        positions = positions.to(h.dtype)
        r = torch.relu(h)
        total = r.sum(-1)
        dead = ~(total > 0)
        n = h.shape[-1]
        a = torch.where(dead[:, None], torch.full_like(r, 1.0 / n), r / torch.where(dead, 1.0, total)[:, None])
        res = sinkhorn_potentials(a, positions, masses, height, width, epsilon, iterations,
                                  tolerance=tolerance, early_stop=early_stop)
        q, c = transport_plan(positions, res.active, res.g, height, width, epsilon)
        loss = (a * (q * c).sum(-1)).sum(-1)
        loss = torch.where(dead, torch.zeros_like(loss), loss)
        ctx.save_for_backward(h, positions, res.g, res.b, res.active)
        ctx.shape = (height, width, float(epsilon))
        if info is not None:
            info.update(iterations_run=res.iterations_run, period=res.period, dead=dead,
                        marginal_error=res.marginal_error)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        h, positions, g, b, active = ctx.saved_tensors
        height, width, eps = ctx.shape
        with torch.no_grad():
            r = torch.relu(h)
            total = r.sum(-1)
            dead = ~(total > 0)
            safe = torch.where(dead, torch.ones_like(total), total)
            a = r / safe[:, None]
            q, c = transport_plan(positions, active, g, height, width, eps)
            grad_a = implicit_supplier_gradient(a, q, c, b, active)
            del q, c
            centred = grad_a - (a * grad_a).sum(-1, keepdim=True)
            scale = torch.where(dead, torch.zeros_like(total), grad_out.to(h.dtype) / safe)
            grad_h = torch.where(h > 0, centred * scale[:, None], torch.zeros_like(h))
        return grad_h, None, None, None, None, None, None, None, None, None


def sinkhorn_transport_cost(h: Tensor, positions: Tensor, masses: Tensor, height: int, width: int,
                            epsilon: float, iterations: int, tolerance: float | None = None,
                            early_stop: bool = True, info: dict | None = None) -> Tensor:
    """Functional entry point for :class:`SinkhornTransportCost` (see there)."""
    return SinkhornTransportCost.apply(h, positions, masses, height, width, epsilon, iterations,
                                       tolerance, early_stop, info)
