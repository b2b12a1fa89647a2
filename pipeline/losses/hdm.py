"""The HDM loss (paper Sec. 3.2-3.3): entropic EMD between each heatmap and its dot's demanders.

``L = sum_k w_k L_k`` per sample (Eq. 5), ``L_k = <C, P>`` the transport cost of the
regularised Sinkhorn plan between ``relu(h_k)/|relu(h_k)|_1`` and the demanders of dot ``k``.
The numerics live in :mod:`pipeline.losses.sinkhorn`; this module handles shapes, dtypes,
weights (masking unused joints before any arithmetic) and reductions.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .sinkhorn import naive_demanders, sinkhorn_transport_cost, subpixel_demanders, transport_cost

_DEMANDERS = ("subpixel", "naive")
_REDUCTIONS = ("mean", "sum", "none")


class HDMLoss(nn.Module):
    """Heatmap Distribution Matching loss.

    Args:
        epsilon: entropic regularisation ``eps = 1/lambda`` in heatmap pixels (paper: 1).
        iterations: exact number of Sinkhorn updates (paper: 1000; Table 5: 500/1500). Updates
            that provably cannot change a bit of the result are skipped (see
            :func:`pipeline.losses.sinkhorn.sinkhorn_potentials`), so large counts cost nothing.
        tolerance: opt-in approximate stop when the largest column-marginal error falls below it.
        demanders: ``"subpixel"`` (4 demanders, Eq. 4) or ``"naive"`` (1 demander at the centre
            of the pixel holding the dot, Table 4; its plan is forced: ``L = sum_n a_n C_n``).
        reduction: ``"mean"`` (over the batch of per-sample sums, Eq. 5), ``"sum"``, or
            ``"none"`` (the ``[B, K]`` weighted per-joint losses).

    After each forward: ``last_dead_joints`` (weighted joints whose ``relu(h)`` has no positive
    pixel; they contribute 0 with zero gradient, and a training loop can report them) and
    ``last_iterations_run`` (Sinkhorn updates actually computed; 0 for naive demanders).
    """

    def __init__(self, epsilon: float = 1.0, iterations: int = 1000, tolerance: float | None = None,
                 demanders: str = "subpixel", reduction: str = "mean") -> None:
        super().__init__()
        if demanders not in _DEMANDERS:
            raise ValueError(f"demanders must be one of {_DEMANDERS}, got {demanders!r}")
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) \
                or not math.isfinite(epsilon) or epsilon <= 0:
            raise ValueError(f"epsilon must be a finite number > 0, got {epsilon!r}")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
        if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(tolerance, (int, float))
                                      or not tolerance > 0):
            raise ValueError(f"tolerance must be None or a number > 0, got {tolerance!r}")
        self.epsilon = float(epsilon)
        self.iterations = int(iterations)
        self.tolerance = None if tolerance is None else float(tolerance)
        self.demanders = demanders
        self.reduction = reduction
        self.last_dead_joints: int = 0
        self.last_iterations_run: int = 0
        # Private switch for tests: run every iteration even when the state is provably stuck.
        self._early_stop: bool = True

    def extra_repr(self) -> str:
        return (f"epsilon={self.epsilon}, iterations={self.iterations}, tolerance={self.tolerance}, "
                f"demanders={self.demanders!r}, reduction={self.reduction!r}")

    def forward(self, heatmaps: Tensor, keypoints: Tensor, weights: Tensor) -> Tensor:
        """``heatmaps [B, K, H, W]``, ``keypoints [B, K, 2]`` as ``(x, y)`` heatmap pixels, ``weights [B, K]``.

        Joints with weight 0 are removed before any arithmetic, so their keypoints may be
        NaN/inf/off the grid and their heatmaps anything: they contribute exactly 0 and get a
        zero gradient. Weighted joints need finite keypoints (ValueError otherwise). Computation
        runs in float64 for float64 heatmaps and float32 otherwise (fp16/bf16 are upcast; the
        loss is then float32 and autograd casts the gradient back to the input dtype).
        """
        if heatmaps.dim() != 4:
            raise ValueError(f"heatmaps must be [B, K, H, W], got shape {tuple(heatmaps.shape)}")
        bsz, k, height, width = heatmaps.shape
        if tuple(keypoints.shape) != (bsz, k, 2):
            raise ValueError(f"keypoints must be [B, K, 2] = {(bsz, k, 2)}, got {tuple(keypoints.shape)}")
        if tuple(weights.shape) != (bsz, k):
            raise ValueError(f"weights must be [B, K] = {(bsz, k)}, got {tuple(weights.shape)}")
        dtype = torch.float64 if heatmaps.dtype == torch.float64 else torch.float32
        hm = heatmaps.reshape(bsz * k, height * width).to(dtype)
        w = weights.reshape(-1).to(device=hm.device, dtype=dtype)
        kp = keypoints.reshape(-1, 2).to(device=hm.device, dtype=dtype)

        idx = torch.nonzero(w != 0).reshape(-1)
        out = torch.zeros(bsz * k, dtype=dtype, device=hm.device)
        self.last_dead_joints = 0
        self.last_iterations_run = 0
        if idx.numel() > 0:
            h_used, kp_used, w_used = hm.index_select(0, idx), kp.index_select(0, idx), w.index_select(0, idx)
            if not bool(torch.isfinite(kp_used).all()):
                raise ValueError("keypoints must be finite for joints with nonzero weight")
            if self.demanders == "naive":
                per_joint, dead = self._naive(h_used, kp_used, height, width)
            else:
                pos, mass = subpixel_demanders(kp_used)
                info: dict = {}
                per_joint = sinkhorn_transport_cost(h_used, pos, mass, height, width, self.epsilon,
                                                    self.iterations, self.tolerance, self._early_stop, info)
                dead = info["dead"]
                self.last_iterations_run = int(info["iterations_run"])
            self.last_dead_joints = int((dead & (w_used > 0)).sum())
            out = out.index_copy(0, idx, per_joint * w_used)
        out = out.reshape(bsz, k)
        if self.reduction == "none":
            return out
        if self.reduction == "sum":
            return out.sum()
        return out.sum(1).mean()

    @staticmethod
    def _naive(h: Tensor, kp: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
        """Closed form for one demander: every pixel ships all its mass there, ``L = sum_n a_n C_n``.

        Plain autograd suffices (no iteration); the denominator is made safe for dead joints so
        that their loss and gradient are exactly 0 rather than NaN.
        """
        pos, _ = naive_demanders(kp)
        cost = transport_cost(pos, height, width)[..., 0]
        r = torch.relu(h)
        total = r.sum(-1)
        dead = ~(total > 0)
        a = r / torch.where(dead, torch.ones_like(total), total)[:, None]
        return (a * cost).sum(-1), dead
