"""Numerical core of the HDM loss: demanders, costs, Sinkhorn on M potentials, implicit gradient.

Everything works on batches of ``J`` independent joints (``J = B*K`` flattened). For one joint:

* suppliers ``a`` (``N = H*W``): ``relu(h) / sum(relu(h))`` (paper Eq. 3);
* demanders: ``M`` points (4 sub-pixel demanders, Eq. 4, or 1 naive one) with masses ``b``;
* cost ``C[m, n]``: Euclidean distance in heatmap pixels between demander ``m`` and pixel centre
  ``n`` (pixel ``(row i, col j)`` has centre ``(x=j, y=i)``, docs/conventions.md). It is built
  from coordinates whenever needed and never kept between forward and backward;
* the entropic plan ``P[n, m] = a_n q[m, n]`` with ``q[:, n] = softmax_m((g_m - C[m, n]) / eps)``,
  where the ``M`` potentials ``g`` solve ``s(g) = b``, ``s_m = sum_n a_n q[m, n]``;
* the loss ``L = <C, P> = sum_n a_n cbar_n``, ``cbar_n = sum_m q[m, n] C[m, n]`` (what POT's
  ``sinkhorn2`` returns; not the regularised objective).

Tensors are stored demander-major, ``(J, M, N)``: the two per-iteration contractions over the
pixels are then both fast batched matrix-vector products. See /work/shared/notes/hdm-math.md
for the derivations. Why it is organised this way:

* **Only the M demander potentials are iterated.** The supplier potentials are eliminated in
  closed form (every row of ``P`` sums to ``a_n`` exactly), so the state is a ``J x M`` tensor.
* **No underflow.** Inside the softmax, subtracting the per-pixel minimum cost
  ``Cmin_n = min_m C[m, n]`` changes nothing and bounds the exponents to ``[-spread/eps, 0]``
  where ``spread`` is the demander set's diameter (``sqrt 2`` for adjacent demanders). The
  factors ``E[m, n] = exp(-(C[m, n] - Cmin_n)/eps)`` are therefore computed once per call and
  each iteration is two contractions over the pixels, with no per-iteration ``exp`` on
  ``J x M x N``. The plain kernel ``exp(-C/eps)`` would underflow in float32 beyond costs of
  ~87 eps. When ``spread/eps`` is so large that ``E`` itself could underflow (tiny ``eps``), a
  log-domain path (a softmax per pixel and per iteration) is used instead.
* **Counting iterations like POT.** Iteration 1 is the demander update from zero supplier
  potentials, ``g = eps (log b - LSE_n(-C[m, n]/eps))`` (standard Sinkhorn from ``u = 1``);
  iterations 2.. are ``g_m += eps (log b_m - log s_m(g))``. So ``iterations = n`` reproduces
  ``ot.sinkhorn2(a, b, M, reg=eps, method="sinkhorn_log", numItermax=n, stopThr=0)``.
* **Gauge.** ``q`` is invariant to adding a constant to ``g``; after every update the largest
  active potential is subtracted, so the state cannot drift and float fixed points exist.
* **Zero-mass demanders** (dot exactly on a grid line) are removed: their factor ``u_m = 0``,
  their potential is held at 0 and they are excluded from the gradient system.
* **Backward without iterates.** Implicit differentiation at the fixed point needs one
  ``(M-1) x (M-1)`` solve per joint; only ``h`` and ``g`` (and the demanders) are saved, so the
  memory kept between forward and backward is ``O(J*N)``; the ``J x M x N`` temporaries are
  rebuilt from coordinates in the backward.
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

# Longest per-joint bitwise cycle the early stop recognises. Near the fixed point the float
# state of a joint hops among a few neighbouring floats; measured periods are 1 or 2 for most
# joints and rarely above 15. A joint with a longer cycle just makes the loop run the full
# count, which is always correct.
_MAX_PERIOD = 64


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

    Pixel ``j`` covers ``[j - 0.5, j + 0.5)``, so the centre is ``floor(x + 0.5)`` (a dot exactly
    on a pixel edge goes to the right/lower pixel; ``torch.round`` would round half to even, which
    is not a geometric rule). Returns ``positions (J, 1, 2)`` and ``masses (J, 1) = 1``.
    """
    pos = torch.floor(keypoints + 0.5)[:, None, :]
    return pos, torch.ones(pos.shape[:2], dtype=keypoints.dtype, device=keypoints.device)


def transport_cost(positions: Tensor, height: int, width: int) -> Tensor:
    """Euclidean cost ``C (J, M, N)`` from every demander to every pixel centre, in pixels.

    Built from the separable squares ``(x_n - x_m)^2`` (``J x M x W``) and ``(y_n - y_m)^2``
    (``J x M x H``): one broadcast add and an in-place sqrt, i.e. a single ``J x M x N``
    allocation (on CPU, fresh large allocations cost as much as the arithmetic).
    """
    cols = torch.arange(width, dtype=positions.dtype, device=positions.device)
    rows = torch.arange(height, dtype=positions.dtype, device=positions.device)
    dx2 = (cols[None, None, :] - positions[..., 0:1]).square_()
    dy2 = (rows[None, None, :] - positions[..., 1:2]).square_()
    cost = torch.add(dy2[..., :, None], dx2[..., None, :]).sqrt_()
    return cost.reshape(positions.shape[0], positions.shape[1], height * width)


def _prepare_masses(masses: Tensor) -> tuple[Tensor, Tensor]:
    """Active-demander mask and masses renormalised to sum 1.

    A mass below ``finfo.eps**2`` (e.g. a dot ``1e-20`` px from a grid line) is treated as 0:
    it changes the loss by less than float resolution but would need a potential of
    ``eps*log(mass)``, far outside the range the other potentials live in. Renormalising makes
    ``sum b = sum a = 1`` hold to rounding, so that a fixed point ``s = b`` exists.
    """
    tiny = torch.finfo(masses.dtype).eps ** 2
    b = torch.where(masses > tiny, masses, torch.zeros_like(masses))
    b = b / b.sum(-1, keepdim=True)
    return b > 0, b


def _gauge(g: Tensor, active: Tensor) -> Tensor:
    """Subtract the largest active potential; inactive entries are held at exactly 0."""
    gmax = torch.where(active, g, torch.full_like(g, -math.inf)).amax(-1, keepdim=True)
    return torch.where(active, g - gmax, torch.zeros_like(g))


def _bits(t: Tensor) -> Tensor:
    """Integer view for a truly bitwise comparison (``torch.equal`` on floats says -0 == 0)."""
    return t.view(torch.int64 if t.element_size() == 8 else torch.int32)


def _use_factor_path(positions: Tensor, epsilon: float) -> bool:
    """Whether ``E = exp(-(C - Cmin)/eps)`` can be precomputed without underflow trouble.

    Exponents live in ``[-spread/eps, 0]``; the factor path needs ``spread/eps`` below a quarter
    of ``-log(tiny)`` (~22 in float32, i.e. eps >~ 0.065 for adjacent demanders; ~177 in
    float64), which leaves room for the products ``u_m E[m, n]`` too.
    """
    if positions.shape[1] < 2:
        return True
    spread = float((positions[:, :, None, :] - positions[:, None, :, :]).norm(dim=-1).amax())
    return spread / float(epsilon) <= -math.log(torch.finfo(positions.dtype).tiny) / 4.0


def _kernel(cost: Tensor, epsilon: float, factor_path: bool) -> tuple[Tensor, Tensor]:
    """``(K, Cmin)``: ``K = exp(-(C - Cmin)/eps)`` on the factor path, else the exponent itself."""
    cmin = cost.amin(1)
    kern = torch.sub(cmin[:, None, :], cost).div_(epsilon)
    return (kern.exp_() if factor_path else kern), cmin


def _plan_from_kernel(kern: Tensor, g: Tensor, active: Tensor, epsilon: float, factor_path: bool,
                      inplace: bool = False) -> Tensor:
    """``q (J, M, N)`` from the potentials: ``u_m E[m, n] / sum_m' u_m' E[m', n]``.

    On the log-domain path it is a per-pixel softmax with max subtraction. Inactive demanders
    get exactly 0. ``inplace`` reuses ``kern``'s memory (the caller no longer needs it).
    """
    if factor_path:
        u = torch.where(active, torch.exp(g / epsilon), torch.zeros_like(g))
        q = kern.mul_(u[..., None]) if inplace else kern * u[..., None]
        return q.div_(q.sum(1, keepdim=True))
    z = torch.where(active[..., None], kern + (g / epsilon)[..., None], -math.inf)
    return torch.softmax(z, dim=1)


@dataclass
class SinkhornResult:
    """Output of :func:`sinkhorn_potentials`.

    ``g (J, M)``: the gauge-fixed potentials after exactly the requested number of iterations
    (or the tolerance stop); ``active``: demanders with nonzero mass; ``b``: renormalised masses;
    ``iterations_run``: updates actually computed (the early stop skips provably idle ones);
    ``period (J,)``: per joint, 1 for a bitwise fixed point, 2 for a bitwise 2-cycle, ..., 0 when
    no cycle was detected (full loop, or tolerance stop); ``marginal_error``: ``max |s - b|``
    over live joints and active demanders at the last update computed; ``factor_path``: which
    numerical path ran (the backward must rebuild ``q`` the same way).
    """

    g: Tensor
    active: Tensor
    b: Tensor
    iterations_run: int
    period: Tensor
    marginal_error: float
    factor_path: bool


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
    oscillation between two neighbouring floats; longer cycles of a few ulps also occur. The loop
    stops once every joint is resolved; the batch-wide fixed point and 2-cycle (``g_t == g_{t-1}``
    or ``g_t == g_{t-2}`` for all joints) are special cases. Joints are never dropped from the
    computation while iterating (resolved ones keep being updated with the others), because
    changing shapes could change the rounding. The check costs a few small ops on the
    ``J x M`` state per iteration (on CUDA, one host sync).

    ``tolerance`` (opt-in, approximate): stop as soon as ``max |s_m(g) - b_m| < tolerance`` over
    live joints and active demanders, returning that ``g``.
    """
    dtype = a.dtype
    eps = float(epsilon)
    pos = positions.to(dtype)
    active, b = _prepare_masses(masses.to(dtype))
    logb = torch.log(torch.where(active, b, torch.ones_like(b)))
    factor_path = _use_factor_path(pos, eps)
    kern, cmin = _kernel(transport_cost(pos, height, width), eps, factor_path)
    zero = torch.zeros((), dtype=dtype, device=a.device)
    tiny = torch.finfo(dtype).tiny

    # Iteration 1 (POT's first v-update, from zero supplier potentials): g = eps (log b - lse),
    # lse_m = LSE_n(-C[m, n]/eps), computed stably as -c0/eps + log sum_n e_n E[m, n] with
    # c0 = min_n Cmin_n and e_n = exp(-(Cmin_n - c0)/eps) <= 1 (1 at the nearest pixel).
    c0 = cmin.amin(-1, keepdim=True)
    if factor_path:
        e = torch.exp((c0 - cmin) / eps)
        lse = torch.log(torch.bmm(e[:, None, :], kern.transpose(1, 2))[:, 0, :]) - c0 / eps
    else:
        lse = torch.logsumexp(kern - (cmin / eps)[:, None, :], dim=2)
    del cmin
    g = _gauge(eps * (logb - lse), active)

    def marginal(g: Tensor) -> Tensor:
        """``s_m = sum_n a_n q[m, n]`` for the current potentials."""
        if factor_path:
            u = torch.where(active, torch.exp(g / eps), zero)  # gauge: the largest active u is 1
            denom = torch.bmm(u[:, None, :], kern)[:, 0, :]  # (J, N), >= exp(-spread/eps)
            return u * torch.bmm((a / denom)[:, None, :], kern.transpose(1, 2))[:, 0, :]
        q = _plan_from_kernel(kern, g, active, eps, factor_path=False)
        return torch.bmm(q, a[..., None])[..., 0]

    live = a.sum(-1, keepdim=True) > 0

    def max_error(s: Tensor) -> float:
        return float(torch.where(active & live, (s - b).abs(), zero).amax())

    nj, nm = g.shape
    iterations_run = 1
    err = math.nan
    s: Tensor | None = None
    period = torch.zeros(nj, dtype=torch.long, device=g.device)
    track = early_stop and iterations > 1
    if track:
        # Ring of the last P states: slot t % P holds g_t (and its bit pattern).
        ring_p = _MAX_PERIOD
        ring_bits = torch.zeros((ring_p, nj, nm), dtype=_bits(g).dtype, device=g.device)
        ring = torch.zeros((ring_p, nj, nm), dtype=dtype, device=g.device)
        ring_bits[1 % ring_p] = _bits(g)
        ring[1 % ring_p] = g
        slots = torch.arange(ring_p, device=g.device)
        resolved = torch.zeros(nj, dtype=torch.bool, device=g.device)
        final = g.clone()
    tolerance_stop = False
    for it in range(2, iterations + 1):
        s = marginal(g)
        if tolerance is not None:
            err = max_error(s)
            if err < tolerance:
                tolerance_stop = True
                break
        step = torch.where(active, logb - torch.log(s.clamp_min(tiny)), zero)
        g = _gauge(g + eps * step, active)
        iterations_run = it
        if not track:
            continue
        # Per joint: the smallest lag p <= P with g_t == g_{t-p} bit for bit (needs t - p >= 1).
        # (Slots >= t are still empty while t < P; they are skipped.)
        k = min(it, ring_p)
        lag = (it - slots[:k]) % ring_p
        lag = torch.where(lag == 0, ring_p, lag)
        cur = _bits(g)
        same = (ring_bits[:k] == cur[None]).all(-1) & (it - lag >= 1)[:, None]
        p = torch.where(same, lag[:, None], ring_p + 1).amin(0)
        hit = (p <= ring_p) & ~resolved
        # That joint's full loop would end on g_{t - p + ((n - t) mod p)}, still in the ring.
        p1 = torch.where(hit, p, 1)
        src = (it - p1 + (iterations - it) % p1) % ring_p
        pick = ring.gather(0, src[None, :, None].expand(1, nj, nm))[0]
        final = torch.where(hit[:, None], pick, final)
        period = torch.where(hit, p, period)
        resolved = resolved | hit
        ring_bits[it % ring_p] = cur
        ring[it % ring_p] = g
        if bool(resolved.all()):
            break
    if track and not tolerance_stop:
        # Resolved joints take their predicted g_n (if the loop ran to n, it equals the current
        # state by periodicity); unresolved ones can only remain if the loop ran to n.
        g = torch.where(resolved[:, None], final, g)
    if s is not None and tolerance is None:
        err = max_error(s)
    return SinkhornResult(g=g, active=active, b=b, iterations_run=iterations_run,
                          period=period, marginal_error=err, factor_path=factor_path)


def transport_plan(positions: Tensor, active: Tensor, g: Tensor, height: int, width: int,
                   epsilon: float, factor_path: bool | None = None) -> tuple[Tensor, Tensor]:
    """Per-pixel conditional plan ``q (J, M, N)`` (columns sum to 1) and the cost ``C (J, M, N)``."""
    if factor_path is None:
        factor_path = _use_factor_path(positions, epsilon)
    cost = transport_cost(positions, height, width)
    kern, _ = _kernel(cost, float(epsilon), factor_path)
    return _plan_from_kernel(kern, g, active, float(epsilon), factor_path, inplace=True), cost


def implicit_supplier_gradient(a: Tensor, q: Tensor, cost: Tensor, b: Tensor, active: Tensor) -> Tensor:
    """``dL/da (J, N)`` at the Sinkhorn fixed point, up to a per-joint additive constant.

    With ``cbar_n = q[:, n] . C[:, n]``, ``r_m = sum_n a_n q[m, n] (C[m, n] - cbar_n)`` and
    ``Hm = diag(b) - sum_n a_n q[:, n] q[:, n]^T`` (symmetric PSD, null vector 1 on the active
    set), solve ``Hm w = r`` on the active demanders with one of them (the largest mass) pinned
    to ``w = 0`` (the gauge), then ``dL/da_n = cbar_n - q[:, n] . w``. Inactive and pinned
    demanders get identity rows/columns and zero right-hand sides, so one fixed-shape batched
    solve handles every active set (1 to M demanders). No ``1/a`` appears, so zero suppliers are
    fine. The additive constant is removed by the L1 normalisation's Jacobian. ``cost`` is
    overwritten (it is a temporary of the backward).
    """
    nm = q.shape[1]
    a3 = a[:, None, :]
    qc = cost.mul_(q)  # q[m, n] C[m, n]
    cbar = qc.sum(1)
    r = torch.bmm(a3, qc.transpose(1, 2))[:, 0, :] - torch.bmm((a * cbar)[:, None, :], q.transpose(1, 2))[:, 0, :]
    del qc, cost
    hm = torch.diag_embed(b) - torch.bmm(q, (q * a3).transpose(1, 2))
    pin = torch.where(active, b, torch.full_like(b, -1.0)).argmax(-1)
    keep = active & (torch.arange(nm, device=b.device) != pin[:, None])
    both = keep[:, :, None] & keep[:, None, :]
    eye = torch.eye(nm, dtype=hm.dtype, device=hm.device).expand_as(hm)
    w = torch.linalg.solve(torch.where(both, hm, eye), torch.where(keep, r, torch.zeros_like(r)))
    return cbar - torch.bmm(w[:, None, :], q)[:, 0, :]


def _suppliers(h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(a, total, dead)``: ``a = relu(h)/total`` (zeros for dead rows), ``total`` made safe (1)."""
    r = torch.relu(h)
    total = r.sum(-1)
    dead = ~(total > 0)
    total = torch.where(dead, torch.ones_like(total), total)
    return r / total[:, None], total, dead


class SinkhornTransportCost(torch.autograd.Function):
    """Per-joint ``<C, P>`` of the entropic plan between ``relu(h)/|relu(h)|_1`` and the demanders.

    Forward under ``no_grad`` (no iterate is recorded), backward by the implicit formula of
    :func:`implicit_supplier_gradient` followed by the Jacobian of relu + L1 normalisation:
    ``dL/dh_j = (G_j - sum_n a_n G_n) / sum relu(h)`` for ``h_j > 0``, else 0. Joints whose
    ``relu(h)`` is all zero ("dead") have loss 0 and gradient 0.

    Inputs: ``h (J, N)`` float32/float64; ``positions (J, M, 2)``; ``masses (J, M)``; python
    ``height, width, epsilon, iterations, tolerance, early_stop``; ``info``: a dict (or None)
    that receives ``iterations_run``, ``period``, ``dead`` (mask), ``marginal_error``.
    """

    @staticmethod
    def forward(ctx: Any, h: Tensor, positions: Tensor, masses: Tensor, height: int, width: int,
                epsilon: float, iterations: int, tolerance: float | None, early_stop: bool,
                info: dict | None) -> Tensor:
        positions = positions.to(h.dtype)
        a, _, dead = _suppliers(h)
        # Dead joints iterate on a uniform row (keeps every quantity finite); result discarded.
        a_iter = torch.where(dead[:, None], torch.full_like(a, 1.0 / a.shape[-1]), a)
        res = sinkhorn_potentials(a_iter, positions, masses, height, width, epsilon, iterations,
                                  tolerance=tolerance, early_stop=early_stop)
        q, cost = transport_plan(positions, res.active, res.g, height, width, epsilon, res.factor_path)
        per_pixel = cost.mul_(q).sum(1)  # cbar_n
        del q, cost
        loss = (a * per_pixel).sum(-1)
        loss = torch.where(dead, torch.zeros_like(loss), loss)
        ctx.save_for_backward(h, positions, res.g, res.b, res.active)
        ctx.config = (height, width, float(epsilon), res.factor_path)
        if info is not None:
            info.update(iterations_run=res.iterations_run, period=res.period, dead=dead,
                        marginal_error=res.marginal_error)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        h, positions, g, b, active = ctx.saved_tensors
        height, width, eps, factor_path = ctx.config
        with torch.no_grad():
            a, total, dead = _suppliers(h)
            q, cost = transport_plan(positions, active, g, height, width, eps, factor_path)
            grad_a = implicit_supplier_gradient(a, q, cost, b, active)
            del q, cost
            centred = grad_a - (a * grad_a).sum(-1, keepdim=True)
            scale = torch.where(dead, torch.zeros_like(total), grad_out.to(h.dtype) / total)
            grad_h = torch.where(h > 0, centred * scale[:, None], torch.zeros_like(h))
        return grad_h, None, None, None, None, None, None, None, None, None


def sinkhorn_transport_cost(h: Tensor, positions: Tensor, masses: Tensor, height: int, width: int,
                            epsilon: float, iterations: int, tolerance: float | None = None,
                            early_stop: bool = True, info: dict | None = None) -> Tensor:
    """Functional entry point for :class:`SinkhornTransportCost` (see there)."""
    return SinkhornTransportCost.apply(h, positions, masses, height, width, epsilon, iterations,
                                       tolerance, early_stop, info)
