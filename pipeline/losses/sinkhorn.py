"""Numerical core of the HDM loss: demanders, costs, Sinkhorn on M potentials, implicit gradient.

Everything works on batches of ``J`` independent joints (``J = B*K`` flattened). For one joint:

* suppliers ``a`` (``N = H*W``): ``relu(h) / sum(relu(h))`` (paper Eq. 3); a caller that wants
  other suppliers (HDM's ``softmax(h)``) passes a distribution, which this map leaves unchanged;
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
  the iterated state is ``u_m = exp(g_m/eps)`` (largest active entry 1): each iteration is the
  plain Sinkhorn step ``u <- b / E^T (a / E u)``, two batched matrix-vector products over the
  pixels and no ``exp`` or ``log`` at all. The plain kernel ``exp(-C/eps)`` would underflow in
  float32 beyond costs of ~87 eps. When ``spread/eps`` is so large that ``E`` itself could
  underflow (tiny ``eps``), a log-domain path (a softmax per pixel and per iteration, on ``g``)
  is used instead.
* **Chunks of joints.** The joints are solved in chunks whose ``E``, ``C`` and plan fit
  :data:`_CHUNK_BYTES` (16 MB): the ~tens of iterations of a chunk then stream from cache
  rather than from main memory, each chunk stops as soon as its own joints are resolved, and
  the ``J x M x N`` temporaries never exist for the whole batch.
* **Counting iterations like POT.** Iteration 1 is the demander update from zero supplier
  potentials, ``g = eps (log b - LSE_n(-C[m, n]/eps))`` (standard Sinkhorn from ``u = 1``);
  iterations 2.. are ``g_m += eps (log b_m - log s_m(g))``. So ``iterations = n`` reproduces
  ``ot.sinkhorn2(a, b, M, reg=eps, method="sinkhorn_log", numItermax=n, stopThr=0)``.
* **Gauge.** ``q`` is invariant to adding a constant to ``g``; after every update the largest
  active potential is subtracted (``u`` divided by its largest entry), so the state cannot
  drift and float fixed points exist.
* **Zero-mass demanders** (dot exactly on a grid line) are removed: their factor ``u_m = 0``,
  their potential is held at 0 and they are excluded from the gradient system.
* **Gradient without iterates.** Implicit differentiation at the fixed point needs one
  ``(M-1) x (M-1)`` solve per joint. It is evaluated in the forward, per chunk, while the
  chunk's plan and costs are in memory (only when ``h`` requires a gradient), and the resulting
  ``J x N`` gradient is the only tensor kept for the backward: memory is ``O(J*N)`` plus one
  chunk, independent of the iteration count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..codecs.hdm import subpixel_demanders as codec_subpixel_demanders

__all__ = [
    "subpixel_demanders",
    "naive_demanders",
    "transport_cost",
    "sinkhorn_potentials",
    "iterations_to_tolerance",
    "SinkhornResult",
    "transport_plan",
    "implicit_supplier_gradient",
    "SinkhornTransportCost",
    "sinkhorn_transport_cost",
]

# Longest per-joint bitwise cycle the early stop recognises. Near the fixed point the float
# state of a joint hops among a few neighbouring floats; measured periods are 1 or 2 for most
# joints and rarely above 15. A joint with a longer cycle just makes the loop run the full
# count, which is always correct.
_MAX_PERIOD = 64
# The early stop compares the state with the ring every this many updates (a cycle is then
# found at most this many updates late; the comparison costs a dozen small ops).
_CHECK_EVERY = 4
# Working set of one chunk of joints (E, C, the plan and a few J x N rows), in bytes: on CPU
# ~16 MB keeps a chunk's iterations in cache (measured on a 2-core EPYC with 32 MB L3: 4 MB
# chunks pay more in per-op overhead than they gain, whole batches stream from memory); on a
# GPU, launches dominate and big chunks win. Capped at _CHUNK_HEATMAPS times the size of the
# J x N input, so that the extra memory stays a small multiple of it for small heatmaps too.
_CHUNK_BYTES = 16 << 20
_CHUNK_BYTES_GPU = 512 << 20
_CHUNK_HEATMAPS = 6


def subpixel_demanders(keypoints: Tensor) -> tuple[Tensor, Tensor]:
    """The four sub-pixel demanders of paper Eq. 4.

    ``keypoints (J, 2)`` as ``(x, y)`` in heatmap pixels -> ``positions (J, 4, 2)``, the pixel
    centres ``(fx, fy), (fx+1, fy), (fx, fy+1), (fx+1, fy+1)`` with ``fx = floor(x)``, and
    ``masses (J, 4) = (1 - |x - x_i|)(1 - |y - y_i|)`` (bilinear weights: they sum to 1 and their
    weighted mean is the dot, the property the paper's decoder inverts). A dot on a grid line
    gives masses that are exactly 0; a dot in the last half pixel has demanders off the grid.
    Both are legitimate and handled by the solver.
    """
    # One definition of Eq. 4 for the whole project: the codec's (it also serves decoding tests).
    return codec_subpixel_demanders(keypoints)


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
    ``iterations_run``: updates actually computed (the early stop skips provably idle ones; the
    largest count over the joint chunks); ``period (J,)``: per joint, 1 for a bitwise fixed point,
    2 for a bitwise 2-cycle, ..., 0 when no cycle was detected (full loop, or tolerance stop);
    ``marginal_error``: ``max |s - b|`` over live joints and active demanders at the last update
    computed; ``factor_path``: which numerical path ran (the backward must rebuild ``q`` the
    same way).
    """

    g: Tensor
    active: Tensor
    b: Tensor
    iterations_run: int
    period: Tensor
    marginal_error: float
    factor_path: bool


@dataclass
class _Chunk:
    """Solver state of one chunk of joints, with its kernel and cost still in memory.

    ``x``: the iterated state, ``u = exp(g/eps)`` (largest active entry exactly 1, inactive 0)
    on the factor path, ``g`` on the log-domain path. ``kern``: ``E`` (factor path) or the
    exponent ``-(C - Cmin)/eps``; ``cost``: ``C``.
    """

    x: Tensor
    active: Tensor
    b: Tensor
    iterations_run: int
    period: Tensor
    marginal_error: float
    kern: Tensor
    cost: Tensor

    def potentials(self, epsilon: float, factor_path: bool) -> Tensor:
        if not factor_path:
            return self.x
        return torch.where(self.active, epsilon * torch.log(self.x), torch.zeros_like(self.x))


def _chunk_slices(nj: int, nm: int, n: int, itemsize: int, device: torch.device) -> list[slice]:
    """Equal chunks of joints whose working set (``E``, ``C``, ``q`` and row temporaries) fits
    :data:`_CHUNK_BYTES` (:data:`_CHUNK_BYTES_GPU` off the CPU) and ``_CHUNK_HEATMAPS`` times the
    ``J x N`` input. The split depends on the shapes only, so repeated calls round alike."""
    per_joint = (3 * nm + 4) * n * itemsize
    budget = min(_CHUNK_BYTES if device.type == "cpu" else _CHUNK_BYTES_GPU, _CHUNK_HEATMAPS * nj * n * itemsize)
    size = max(1, min(nj, budget // per_joint))
    count = -(-nj // size)
    size = -(-nj // count)  # balance: equal chunks (the last may be shorter)
    return [slice(i, min(i + size, nj)) for i in range(0, nj, size)]


def _first_state(b: Tensor, active: Tensor, kern: Tensor, cmin: Tensor, eps: float, factor_path: bool
                 ) -> tuple[Tensor, Tensor | None]:
    """``(x_1, log b)``: the state after iteration 1 (``log b`` only on the log-domain path, which
    reuses it in every update).

    Iteration 1 is POT's first v-update, from zero supplier potentials: v = b / sum_n K[m, n],
    computed stably with c0 = min_n Cmin_n and e_n = exp(-(Cmin_n - c0)/eps) <= 1 (1 at the
    nearest pixel): sum_n K[m, n] = exp(-c0/eps) sum_n e_n E[m, n], the common factor dropping
    out in the gauge.
    """
    c0 = cmin.amin(-1, keepdim=True)
    if factor_path:
        e = torch.exp((c0 - cmin) / eps)
        x = b / torch.bmm(e[:, None, :], kern.transpose(1, 2))[:, 0, :]
        return x.div_(x.amax(-1, keepdim=True)), None
    logb = torch.log(torch.where(active, b, torch.ones_like(b)))
    lse = torch.logsumexp(kern - (cmin / eps)[:, None, :], dim=2)
    return _gauge(eps * (logb - lse), active), logb


@dataclass
class _Updates:
    """The Sinkhorn update of one chunk and the marginal errors of its states: what every iteration
    reads (supplier masses, kernel, renormalised demander masses) held once for the whole loop."""

    a: Tensor
    b: Tensor
    active: Tensor
    live: Tensor
    kern: Tensor
    logb: Tensor | None
    eps: float
    factor_path: bool

    def __post_init__(self) -> None:
        self.zero = torch.zeros((), dtype=self.a.dtype, device=self.a.device)
        self.tiny = torch.finfo(self.a.dtype).tiny

    def step(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(F(x), r)``: the next state, and ``r`` with column marginals ``s(x) = marginals(x, r)``."""
        if self.factor_path:
            # v <- b / K^T (a / K v), as two batched matrix-vector products over the pixels.
            denom = torch.bmm(x[:, None, :], self.kern)[:, 0, :]  # (c, N), >= exp(-spread/eps)
            ratio = torch.div(self.a, denom, out=denom)
            w = torch.bmm(ratio[:, None, :], self.kern.transpose(1, 2))[:, 0, :]  # (c, M), > 0
            nxt = self.b / w  # exactly 0 for inactive demanders (b = 0)
            return nxt.div_(nxt.amax(-1, keepdim=True)), w
        q = _plan_from_kernel(self.kern, x, self.active, self.eps, factor_path=False)
        s = torch.bmm(q, self.a[..., None])[..., 0]
        step = torch.where(self.active, self.logb - torch.log(s.clamp_min(self.tiny)), self.zero)
        return _gauge(x + self.eps * step, self.active), s

    def marginals(self, x: Tensor, r: Tensor) -> Tensor:
        """Column marginals ``s(x)`` from a state and the ``r`` its update returned."""
        return x * r if self.factor_path else r

    def joint_errors(self, x: Tensor, r: Tensor) -> Tensor:
        """``(c,)``: per joint, ``max |s_m - b_m|`` over active demanders (0 for dead joints)."""
        return torch.where(self.active & self.live, (self.marginals(x, r) - self.b).abs(), self.zero).amax(-1)

    def max_error(self, s: Tensor) -> float:
        """``max |s_m - b_m|`` over live joints and active demanders."""
        return float(torch.where(self.active & self.live, (s - self.b).abs(), self.zero).amax())


class _CycleWatch:
    """Ring of the last ``_MAX_PERIOD + 1`` states that finds, per joint, a bitwise cycle and the
    state the full loop would end on (see :func:`sinkhorn_potentials`, early stop).

    Slot ``t % P`` holds ``x_t``; lags ``1..P-1`` are compared with ``x_t``."""

    def __init__(self, x: Tensor, iterations: int) -> None:
        nj, nm = x.shape
        self.iterations = iterations
        self.ring_p = _MAX_PERIOD + 1
        self.ring = torch.zeros((self.ring_p, nj, nm), dtype=x.dtype, device=x.device)
        self.ring_bits = _bits(self.ring)
        self.ring[1 % self.ring_p] = x
        self.lags_all = torch.arange(1, self.ring_p, device=x.device)
        self.resolved = torch.zeros(nj, dtype=torch.bool, device=x.device)
        self.final = x.clone()
        self.period = torch.zeros(nj, dtype=torch.long, device=x.device)

    def record(self, it: int, x: Tensor) -> bool:
        """Keep ``x_it``; every :data:`_CHECK_EVERY` updates resolve the joints now in a cycle.
        Returns whether every joint is resolved (the loop can stop)."""
        ring_p = self.ring_p
        self.ring[it % ring_p] = x
        if it % _CHECK_EVERY:
            return False
        nj, nm = x.shape
        # Per joint: the smallest lag p with x_t == x_{t-p} bit for bit (t - p >= 1).
        lags = self.lags_all[:min(ring_p - 1, it - 1)]
        same = (self.ring_bits[(it - lags) % ring_p] == _bits(x)[None]).all(-1)
        p = torch.where(same, lags[:, None], ring_p).amin(0)
        hit = (p < ring_p) & ~self.resolved
        # That joint's full loop would end on x_{t - p + ((n - t) mod p)}, still in the ring.
        p1 = torch.where(hit, p, 1)
        src = (it - p1 + (self.iterations - it) % p1) % ring_p
        pick = self.ring.gather(0, src[None, :, None].expand(1, nj, nm))[0]
        self.final = torch.where(hit[:, None], pick, self.final)
        self.period = torch.where(hit, p, self.period)
        self.resolved = self.resolved | hit
        return bool(self.resolved.all())

    def final_state(self, x: Tensor) -> Tensor:
        """Resolved joints take their predicted ``x_n`` (if the loop ran to ``n``, it equals the current
        state by periodicity); unresolved ones can only remain if the loop ran to ``n``."""
        return torch.where(self.resolved[:, None], self.final, x)


def _solve_chunk(a: Tensor, pos: Tensor, masses: Tensor, height: int, width: int, eps: float,
                 iterations: int, tolerance: float | None, early_stop: bool, factor_path: bool,
                 trace: list[Tensor] | None = None) -> _Chunk:
    """Sinkhorn on one chunk of joints (see :func:`sinkhorn_potentials` for the contract).

    ``trace``, when given, receives per update computed the per-joint marginal error ``(c,)`` of the
    state before it: entry ``i`` belongs to the state after ``i + 1`` updates. It only reads."""
    active, b = _prepare_masses(masses)
    cost = transport_cost(pos, height, width)
    kern, cmin = _kernel(cost, eps, factor_path)
    live = a.sum(-1, keepdim=True) > 0
    x, logb = _first_state(b, active, kern, cmin, eps, factor_path)
    del cmin
    updates = _Updates(a, b, active, live, kern, logb, eps, factor_path)

    iterations_run = 1
    err = math.nan
    last: tuple[Tensor, Tensor] | None = None  # (x, r) of the last update computed
    watch = _CycleWatch(x, iterations) if early_stop and iterations > 1 else None
    tolerance_stop = False
    for it in range(2, iterations + 1):
        nxt, r = updates.step(x)
        last = (x, r)
        if trace is not None:
            trace.append(updates.joint_errors(x, r))
        if tolerance is not None:
            err = updates.max_error(updates.marginals(x, r))
            if err < tolerance:
                tolerance_stop = True
                break
        x = nxt
        iterations_run = it
        if watch is not None and watch.record(it, x):
            break
    if watch is not None and not tolerance_stop:
        x = watch.final_state(x)
    if last is not None and tolerance is None:
        err = updates.max_error(updates.marginals(*last))
    period = watch.period if watch is not None else torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    return _Chunk(x=x, active=active, b=b, iterations_run=iterations_run, period=period,
                  marginal_error=err, kern=kern, cost=cost)


def _max_error(errors: list[float]) -> float:
    finite = [e for e in errors if not math.isnan(e)]
    return max(finite) if finite else math.nan


def _joined_result(parts: list[_Chunk], eps: float, factor_path: bool) -> SinkhornResult:
    """The chunks' results as one, in joint order (the largest iteration count and marginal error)."""
    return SinkhornResult(
        g=torch.cat([ch.potentials(eps, factor_path) for ch in parts]),
        active=torch.cat([ch.active for ch in parts]),
        b=torch.cat([ch.b for ch in parts]),
        iterations_run=max(ch.iterations_run for ch in parts),
        period=torch.cat([ch.period for ch in parts]),
        marginal_error=_max_error([ch.marginal_error for ch in parts]),
        factor_path=factor_path)


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

    The joints are processed in chunks sized so that a chunk's ``E`` and ``C`` stay in cache
    while it iterates (:data:`_CHUNK_BYTES`); the split depends on the shapes only. On the
    factor path the state is ``v = u = exp(g/eps)`` and an update is the plain Sinkhorn step
    ``v <- b / E^T (a / E v)`` followed by the gauge ``v <- v / max v``.

    Early stop (``early_stop=True``), and why it returns exactly the bits of the full loop:
    the update ``x <- F(x)`` is a deterministic function of the state alone (``a``, ``C``, ``b``
    and the tensor shapes are fixed for the whole call, and every iteration runs the same
    vectorised ops over all joints of a chunk, so the float rounding is the same every time).
    Each joint's row is computed from that joint's data only (row-wise ops, per-matrix batched
    products), so every joint follows its own deterministic sequence ``x_{t+1} = F_j(x_t)``.
    Hence if after update ``t`` a joint's state equals, bit for bit, its state ``p`` updates
    earlier, its sequence is periodic with period ``p`` from there on and the iterate the full
    count ``n`` would end on is already known: ``x_n = x_{t - p + ((n - t) mod p)}`` (kept in a
    ring of the last ``_MAX_PERIOD`` states). ``p = 1`` is a float fixed point, ``p = 2`` the
    rounding oscillation between two neighbouring floats; longer cycles of a few ulps also
    occur. The states are compared every :data:`_CHECK_EVERY` updates (a cycle is found at most
    that many updates late; any lag that matches gives a valid prediction) and a chunk stops
    once every joint in it is resolved. Joints are never dropped from a chunk while iterating
    (resolved ones keep being updated with the others), because changing shapes could change
    the rounding.

    ``tolerance`` (opt-in, approximate): stop as soon as ``max |s_m(g) - b_m| < tolerance`` over
    live joints and active demanders (per chunk), returning that ``g``.
    """
    dtype = a.dtype
    eps = float(epsilon)
    pos = positions.to(dtype)
    masses = masses.to(dtype)
    factor_path = _use_factor_path(pos, eps)
    nj, nm = masses.shape
    parts = []
    for sl in _chunk_slices(nj, nm, height * width, a.element_size(), a.device):
        ch = _solve_chunk(a[sl], pos[sl], masses[sl], height, width, eps, iterations, tolerance,
                          early_stop, factor_path)
        ch.kern = ch.cost = None  # type: ignore[assignment]
        parts.append(ch)
    return _joined_result(parts, eps, factor_path)


@torch.no_grad()
def iterations_to_tolerance(a: Tensor, positions: Tensor, masses: Tensor, height: int, width: int,
                            epsilon: float, iterations: int, tolerances: list[float]) -> Tensor:
    """``(J, T)`` int64: per joint and tolerance, the number of updates after which the largest
    column-marginal error ``max_m |s_m - b_m|`` of that joint first fell below the tolerance, i.e.
    the ``iterations_run`` a call of :func:`sinkhorn_potentials` with that ``tolerance`` on the
    joint alone stops at; ``iterations`` (the cap) where it never did within it.

    One solve serves every tolerance: the per-joint errors of every state are recorded as the
    solver (with its bitwise early stop) runs. A joint that entered a float cycle without reaching
    a tolerance never reaches it (its states, hence errors, repeat), so the cap is exact there too.
    Dead joints (``a`` all 0) have no error to measure and count 1: leave them out beforehand.
    """
    eps = float(epsilon)
    pos = positions.to(a.dtype)
    masses = masses.to(a.dtype)
    factor_path = _use_factor_path(pos, eps)
    nj, nm = masses.shape
    tol = torch.as_tensor(list(tolerances), dtype=a.dtype, device=a.device)
    out = torch.full((nj, len(tol)), int(iterations), dtype=torch.long, device=a.device)
    for sl in _chunk_slices(nj, nm, height * width, a.element_size(), a.device):
        trace: list[Tensor] = []
        _solve_chunk(a[sl], pos[sl], masses[sl], height, width, eps, iterations, None, True, factor_path, trace)
        if not trace:
            continue
        errs = torch.stack(trace, 1)  # (c, L): column i is the state after i + 1 updates
        below = errs[:, None, :] < tol[None, :, None]  # (c, T, L)
        first = below.to(torch.int8).argmax(-1) + 1
        out[sl] = torch.where(below.any(-1), first, out[sl])
    return out


def transport_plan(positions: Tensor, active: Tensor, g: Tensor, height: int, width: int,
                   epsilon: float, factor_path: bool | None = None) -> tuple[Tensor, Tensor]:
    """Per-pixel conditional plan ``q (J, M, N)`` (columns sum to 1) and the cost ``C (J, M, N)``."""
    if factor_path is None:
        factor_path = _use_factor_path(positions, epsilon)
    cost = transport_cost(positions, height, width)
    kern, _ = _kernel(cost, float(epsilon), factor_path)
    return _plan_from_kernel(kern, g, active, float(epsilon), factor_path, inplace=True), cost


def _implicit_gradient(a: Tensor, q: Tensor, qc: Tensor, cbar: Tensor, b: Tensor, active: Tensor) -> Tensor:
    """:func:`implicit_supplier_gradient` from ``qc = q * C`` and ``cbar = qc.sum(1)`` (``qc`` is overwritten)."""
    nm = q.shape[1]
    a3 = a[:, None, :]
    r = torch.bmm(a3, qc.transpose(1, 2))[:, 0, :] - torch.bmm((a * cbar)[:, None, :], q.transpose(1, 2))[:, 0, :]
    plan = torch.mul(q, a3, out=qc)  # qc is no longer needed: reuse its memory for P = a q
    hm = torch.diag_embed(b) - torch.bmm(q, plan.transpose(1, 2))
    del plan
    pin = torch.where(active, b, torch.full_like(b, -1.0)).argmax(-1)
    keep = active & (torch.arange(nm, device=b.device) != pin[:, None])
    both = keep[:, :, None] & keep[:, None, :]
    eye = torch.eye(nm, dtype=hm.dtype, device=hm.device).expand_as(hm)
    w = torch.linalg.solve(torch.where(both, hm, eye), torch.where(keep, r, torch.zeros_like(r)))
    return cbar - torch.bmm(w[:, None, :], q)[:, 0, :]


def implicit_supplier_gradient(a: Tensor, q: Tensor, cost: Tensor, b: Tensor, active: Tensor) -> Tensor:
    """``dL/da (J, N)`` at the Sinkhorn fixed point, up to a per-joint additive constant.

    With ``cbar_n = q[:, n] . C[:, n]``, ``r_m = sum_n a_n q[m, n] (C[m, n] - cbar_n)`` and
    ``Hm = diag(b) - sum_n a_n q[:, n] q[:, n]^T`` (symmetric PSD, null vector 1 on the active
    set), solve ``Hm w = r`` on the active demanders with one of them (the largest mass) pinned
    to ``w = 0`` (the gauge), then ``dL/da_n = cbar_n - q[:, n] . w``. Inactive and pinned
    demanders get identity rows/columns and zero right-hand sides, so one fixed-shape batched
    solve handles every active set (1 to M demanders). No ``1/a`` appears, so zero suppliers are
    fine. The additive constant is removed by the L1 normalisation's Jacobian. ``cost`` is
    overwritten (it is a temporary of the caller).
    """
    qc = cost.mul_(q)  # q[m, n] C[m, n]
    return _implicit_gradient(a, q, qc, qc.sum(1), b, active)


def _suppliers(h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(a, total, dead)``: ``a = relu(h)/total`` (zeros for dead rows), ``total`` made safe (1)."""
    r = torch.relu(h)
    total = r.sum(-1)
    dead = ~(total > 0)
    total = torch.where(dead, torch.ones_like(total), total)
    return r.div_(total[:, None]), total, dead


class SinkhornTransportCost(torch.autograd.Function):
    """Per-joint ``<C, P>`` of the entropic plan between ``relu(h)/|relu(h)|_1`` and the demanders.

    Forward under ``no_grad`` (no iterate is recorded). The gradient is the implicit formula of
    :func:`implicit_supplier_gradient` followed by the Jacobian of relu + L1 normalisation:
    ``dL/dh_j = (G_j - sum_n a_n G_n) / sum relu(h)`` for ``h_j > 0``, else 0. It is computed in
    the forward, chunk by chunk while that chunk's plan and costs are still in memory, whenever
    ``h`` needs a gradient, and saved (``J x N``, the size of ``h``): the backward only scales it
    by the incoming gradient. Joints whose ``relu(h)`` is all zero ("dead") have loss 0 and
    gradient 0. Memory beyond the ``J x N`` input, gradient and saved tensor is one chunk's
    working set (:data:`_CHUNK_BYTES`), whatever ``J`` and the iteration count.

    Inputs: ``h (J, N)`` float32/float64; ``positions (J, M, 2)``; ``masses (J, M)``; python
    ``height, width, epsilon, iterations, tolerance, early_stop``; ``info``: a dict (or None)
    that receives ``iterations_run``, ``period``, ``dead`` (mask), ``marginal_error``.
    """

    @staticmethod
    def forward(ctx: Any, h: Tensor, positions: Tensor, masses: Tensor, height: int, width: int,
                epsilon: float, iterations: int, tolerance: float | None, early_stop: bool,
                info: dict | None) -> Tensor:
        eps = float(epsilon)
        positions = positions.to(h.dtype)
        masses = masses.to(h.dtype)
        nj, n = h.shape
        nm = masses.shape[1]
        need_grad = bool(ctx.needs_input_grad[0])
        factor_path = _use_factor_path(positions, eps)
        loss = torch.empty(nj, dtype=h.dtype, device=h.device)
        dead = torch.empty(nj, dtype=torch.bool, device=h.device)
        base = torch.empty_like(h) if need_grad else None
        iterations_run, periods, errors = 0, [], []
        for sl in _chunk_slices(nj, nm, n, h.element_size(), h.device):
            hc = h[sl]
            a, total, dead_c = _suppliers(hc)
            # Dead joints iterate on a uniform row (keeps every quantity finite); result discarded.
            a_iter = torch.where(dead_c[:, None], 1.0 / n, a) if bool(dead_c.any()) else a
            ch = _solve_chunk(a_iter, positions[sl], masses[sl], height, width, eps, iterations,
                              tolerance, early_stop, factor_path)
            if factor_path:  # q = u E / sum_m u E, in place of E
                q = ch.kern.mul_(ch.x[..., None])
                q = q.div_(q.sum(1, keepdim=True))
            else:
                q = _plan_from_kernel(ch.kern, ch.x, ch.active, eps, factor_path=False)
            ch.kern = None  # type: ignore[assignment]
            qc = ch.cost.mul_(q)  # q[m, n] C[m, n]
            cbar = qc.sum(1)
            loss[sl] = torch.where(dead_c, torch.zeros_like(total), (a * cbar).sum(-1))
            dead[sl] = dead_c
            if need_grad:
                grad_a = _implicit_gradient(a, q, qc, cbar, ch.b, ch.active)
                del q, qc
                centred = grad_a.sub_((a * grad_a).sum(-1, keepdim=True))
                scale = torch.where(dead_c, torch.zeros_like(total), 1.0 / total)
                base[sl] = torch.where(hc > 0, centred.mul_(scale[:, None]), torch.zeros_like(centred))
            iterations_run = max(iterations_run, ch.iterations_run)
            periods.append(ch.period)
            errors.append(ch.marginal_error)
            del ch
        if need_grad:
            ctx.save_for_backward(base, dead)
        if info is not None:
            info.update(iterations_run=iterations_run, period=torch.cat(periods), dead=dead,
                        marginal_error=_max_error(errors))
        return loss

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        base, dead = ctx.saved_tensors
        go = torch.where(dead, torch.zeros((), dtype=base.dtype, device=base.device), grad_out.to(base.dtype))
        return base * go[:, None], None, None, None, None, None, None, None, None, None


def sinkhorn_transport_cost(h: Tensor, positions: Tensor, masses: Tensor, height: int, width: int,
                            epsilon: float, iterations: int, tolerance: float | None = None,
                            early_stop: bool = True, info: dict | None = None) -> Tensor:
    """Functional entry point for :class:`SinkhornTransportCost` (see there)."""
    return SinkhornTransportCost.apply(h, positions, masses, height, width, epsilon, iterations,
                                       tolerance, early_stop, info)
