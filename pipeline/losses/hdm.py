"""The HDM loss (paper Sec. 3.2-3.3): entropic EMD between each heatmap and its dot's demanders.

``L = sum_k w_k L_k`` per sample (Eq. 5), ``L_k = <C, P>`` the transport cost of the
regularised Sinkhorn plan between the suppliers of heatmap ``k`` and the demanders of dot ``k``.
The suppliers are ``relu(h_k)/|relu(h_k)|_1`` (Eq. 3, the paper) or, beyond the paper,
``softmax(h_k)`` over the pixels (``suppliers="softmax"``); both go through the same solver.
The numerics live in :mod:`pipeline.losses.sinkhorn`; this module handles shapes, dtypes,
weights (masking unused joints before any arithmetic) and reductions.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .sinkhorn import naive_demanders, sinkhorn_transport_cost, subpixel_demanders, transport_cost
from .pairing import LossCodecs, register_loss_codecs

_DEMANDERS = ("subpixel", "naive")
REDUCTIONS = ("mean", "sum", "none")


def reduce_per_joint(out: Tensor, reduction: str) -> Tensor:
    """``[B, K]`` weighted per-joint losses reduced as the dot losses reduce them: ``"none"`` as they are,
    ``"sum"``, or ``"mean"`` over the batch of per-sample sums (Eq. 5)."""
    if reduction == "none":
        return out
    if reduction == "sum":
        return out.sum()
    return out.sum(1).mean()
_DEAD_JOINTS = ("zero", "softmax")
SUPPLIERS = ("relu", "softmax")
EPSILON_UNITS = ("heatmap", "input")


def effective_epsilon(epsilon: float, units: str = "heatmap", stride: float | None = None) -> float:
    """The entropic regularisation in heatmap pixels, the units the costs are built in.

    ``units="heatmap"``: ``epsilon`` is already in heatmap pixels (the paper's lambda = 1 read on
    heatmap-pixel costs). ``units="input"``: ``epsilon`` is meant for costs in input-image pixels,
    ``C_in = stride * C_hm``. Rescaling eps instead of the costs gives the same plan, because the
    Sinkhorn plan minimises ``<C, P> - eps H(P)`` and
    ``stride <C_hm, P> - eps H(P) = stride (<C_hm, P> - (eps / stride) H(P))``: so we use
    ``eps / stride`` on heatmap-pixel costs, and the transport cost in input pixels is exactly
    ``stride`` times the value returned here (which stays in heatmap pixels).
    """
    if units not in EPSILON_UNITS:
        raise ValueError(f"epsilon_units must be one of {EPSILON_UNITS}, got {units!r}")
    if units == "heatmap":
        return float(epsilon)
    if isinstance(stride, bool) or not isinstance(stride, (int, float)) or not math.isfinite(stride) \
            or stride <= 0:
        raise ValueError(f"stride must be a finite number > 0 when epsilon_units='input', got {stride!r}")
    return float(epsilon) / float(stride)


class HDMLoss(nn.Module):
    """Heatmap Distribution Matching loss.

    Args:
        epsilon: entropic regularisation ``eps = 1/lambda`` (paper: 1), in the units of ``epsilon_units``.
        epsilon_units: ``"heatmap"`` (default): ``epsilon`` is in heatmap pixels. ``"input"``: it is in
            input-image pixels, i.e. it regularises costs measured in input pixels; the loss then
            runs with ``epsilon / stride`` on heatmap-pixel costs (same plan, see
            :func:`effective_epsilon`). Either way the returned loss and its gradient are the
            transport cost in **heatmap pixels** (multiply by ``stride`` for input pixels), so
            the loss scale seen by the optimiser is the same for both choices and only the
            sharpness of the plan changes.
        stride: input pixels per heatmap pixel (e.g. 4); required when ``epsilon_units="input"``.
        iterations: exact number of Sinkhorn updates (paper: 1000; Table 5: 500/1500). Updates
            that provably cannot change a bit of the result are skipped (see
            :func:`pipeline.losses.sinkhorn.sinkhorn_potentials`), so large counts cost nothing.
        tolerance: opt-in approximate stop when the largest column-marginal error falls below it.
        demanders: ``"subpixel"`` (4 demanders, Eq. 4) or ``"naive"`` (1 demander at the centre
            of the pixel holding the dot, Table 4; its plan is forced: ``L = sum_n a_n C_n``).
        reduction: ``"mean"`` (over the batch of per-sample sums, Eq. 5), ``"sum"``, or
            ``"none"`` (the ``[B, K]`` weighted per-joint losses).
        dead_joints: what a weighted joint whose ``relu(h)`` has no positive pixel contributes.
            ``"zero"`` (default; Eq. 3 is undefined there): 0 with zero gradient. ``"softmax"``:
            the same transport cost with the suppliers ``softmax(h)`` over the pixels, whose
            gradient lifts the heatmap near the dot until it has positive mass again. Training
            from scratch needs it: with ``"zero"`` a network lowers its loss by switching
            heatmaps off entirely (loss 0, no gradient ever again), and measured on the demo
            most heatmaps were dead within two epochs. Live joints are unaffected.
        suppliers: ``"relu"`` (default, Eq. 3): ``relu(h)/sum relu(h)``, so only the positive pixels
            carry mass and get gradient. ``"softmax"`` (beyond the paper): ``softmax(h)`` over the
            ``H*W`` pixels, so every pixel carries mass and gets gradient. Softmax is invariant to
            adding a constant to ``h`` and never has zero mass, so ``dead_joints`` and the model's
            ``center_heatmaps`` wrapper then change nothing (they stay valid settings, and
            ``last_dead_joints`` is always 0). The transport cost is the same function of the
            suppliers as for relu (one solver, :mod:`pipeline.losses.sinkhorn`); the softmax's
            Jacobian is applied by autograd.

    After each forward: ``last_dead_joints`` (weighted joints whose ``relu(h)`` has no positive
    pixel; they contribute 0 with zero gradient, and a training loop can report them) and
    ``last_iterations_run`` (Sinkhorn updates actually computed; 0 for naive demanders).
    """

    def __init__(self, epsilon: float = 1.0, iterations: int = 1000, tolerance: float | None = None,
                 demanders: str = "subpixel", reduction: str = "mean", dead_joints: str = "zero",
                 epsilon_units: str = "heatmap", stride: float | None = None, suppliers: str = "relu") -> None:
        super().__init__()
        if suppliers not in SUPPLIERS:
            raise ValueError(f"suppliers must be one of {SUPPLIERS}, got {suppliers!r}")
        if demanders not in _DEMANDERS:
            raise ValueError(f"demanders must be one of {_DEMANDERS}, got {demanders!r}")
        if dead_joints not in _DEAD_JOINTS:
            raise ValueError(f"dead_joints must be one of {_DEAD_JOINTS}, got {dead_joints!r}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) \
                or not math.isfinite(epsilon) or epsilon <= 0:
            raise ValueError(f"epsilon must be a finite number > 0, got {epsilon!r}")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
        if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(tolerance, (int, float))
                                      or not tolerance > 0):
            raise ValueError(f"tolerance must be None or a number > 0, got {tolerance!r}")
        self.epsilon = float(epsilon)
        self.epsilon_units = epsilon_units
        self.stride = None if stride is None else float(stride)
        # What the Sinkhorn solver uses: eps in heatmap pixels (costs are in heatmap pixels).
        self.epsilon_effective = effective_epsilon(epsilon, epsilon_units, stride)
        self.iterations = int(iterations)
        self.tolerance = None if tolerance is None else float(tolerance)
        self.demanders = demanders
        self.reduction = reduction
        self.dead_joints = dead_joints
        self.suppliers = suppliers
        self.last_dead_joints: int = 0
        self.last_iterations_run: int = 0
        # Private switch for tests: run every iteration even when the state is provably stuck.
        self._early_stop: bool = True

    def extra_repr(self) -> str:
        return (f"epsilon={self.epsilon}, epsilon_units={self.epsilon_units!r}, stride={self.stride}, "
                f"epsilon_effective={self.epsilon_effective}, iterations={self.iterations}, tolerance={self.tolerance}, "
                f"demanders={self.demanders!r}, reduction={self.reduction!r}, dead_joints={self.dead_joints!r}, "
                f"suppliers={self.suppliers!r}")

    def forward(self, heatmaps: Tensor, keypoints: Tensor, weights: Tensor) -> Tensor:
        """The loss reduced as ``reduction`` says; arguments as :meth:`weighted_per_joint`."""
        return reduce_per_joint(self.weighted_per_joint(heatmaps, keypoints, weights), self.reduction)

    def per_sample(self, heatmaps: Tensor, keypoints: Tensor, weights: Tensor) -> Tensor:
        """``[B]``: each sample's loss, what a batch of that sample alone gives with ``"mean"``; one
        batched solve for many people (the evaluation's per-person losses)."""
        return self.weighted_per_joint(heatmaps, keypoints, weights).sum(1)

    def weighted_per_joint(self, heatmaps: Tensor, keypoints: Tensor, weights: Tensor) -> Tensor:
        """``[B, K]`` weighted per-joint costs of ``heatmaps [B, K, H, W]``, ``keypoints [B, K, 2]`` as ``(x, y)`` heatmap pixels, ``weights [B, K]``
        (``[B, K, 1]`` is accepted too).

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
        if tuple(weights.shape) not in ((bsz, k), (bsz, k, 1)):  # [B, K, 1]: HRNet's target_weight
            raise ValueError(f"weights must be [B, K] = {(bsz, k)}, got {tuple(weights.shape)}")
        dtype = torch.float64 if heatmaps.dtype == torch.float64 else torch.float32
        hm = heatmaps.reshape(bsz * k, height * width).to(dtype)
        w = weights.reshape(-1).to(device=hm.device, dtype=dtype)
        kp = keypoints.reshape(-1, 2).to(device=hm.device, dtype=dtype)

        idx = torch.nonzero(w != 0).reshape(-1)
        # Zeros attached to the graph (an empty slice's sum), so that a batch with no weighted
        # joint still gives a loss that can be backpropagated (with zero gradient, even if
        # some heatmap holds NaN).
        out = torch.zeros(bsz * k, dtype=dtype, device=hm.device) + hm.reshape(-1)[:0].sum()
        self.last_dead_joints = 0
        self.last_iterations_run = 0
        if idx.numel() > 0:
            if idx.numel() == hm.shape[0]:  # every joint weighted: no copy of the heatmaps
                h_used, kp_used, w_used = hm, kp, w
            else:
                h_used, kp_used, w_used = hm.index_select(0, idx), kp.index_select(0, idx), w.index_select(0, idx)
            if not bool(torch.isfinite(kp_used).all()):
                raise ValueError("keypoints must be finite for joints with nonzero weight")
            if self.suppliers == "softmax":
                per_joint = self._softmax_per_joint(h_used, kp_used, height, width)
            else:
                per_joint = self._relu_per_joint(h_used, kp_used, w_used, height, width)

            out = out.index_copy(0, idx, per_joint * w_used)
        return out.reshape(bsz, k)

    def _relu_per_joint(self, h: Tensor, kp: Tensor, w: Tensor, height: int, width: int) -> Tensor:
        """Eq. 3 suppliers; weighted joints with no positive pixel are counted in ``last_dead_joints``
        and get 0 (``dead_joints="zero"``) or the softmax suppliers' cost (``"softmax"``)."""
        per_joint, dead = self._per_joint(h, kp, height, width)
        self.last_dead_joints = int((dead & (w > 0)).sum())
        if self.dead_joints == "softmax" and self.last_dead_joints > 0:
            sel = torch.nonzero(dead & (w > 0)).reshape(-1)
            revived = self._softmax_per_joint(h.index_select(0, sel), kp.index_select(0, sel), height, width)
            per_joint = per_joint.index_copy(0, sel, revived)
        return per_joint

    def _softmax_per_joint(self, h: Tensor, kp: Tensor, height: int, width: int) -> Tensor:
        """Transport cost with the suppliers ``softmax(h)``: a distribution already (positive, sum 1),
        which the relu + L1 normalisation inside the solver leaves unchanged, so the same solver and
        its gradient apply; autograd chains the softmax's Jacobian. Never dead."""
        per_joint, _ = self._per_joint(torch.softmax(h, dim=-1), kp, height, width)
        return per_joint

    def _per_joint(self, h: Tensor, kp: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
        """Per-joint transport cost ``[J]`` and the dead mask ``[J]`` of flattened heatmaps ``[J, N]``."""
        if self.demanders == "naive":
            return self._naive(h, kp, height, width)
        pos, mass = subpixel_demanders(kp)
        info: dict = {}
        per_joint = sinkhorn_transport_cost(h, pos, mass, height, width, self.epsilon_effective,
                                            self.iterations, self.tolerance, self._early_stop, info)
        self.last_iterations_run = max(self.last_iterations_run, int(info["iterations_run"]))
        return per_joint, info["dead"]

    @staticmethod
    def _naive(h: Tensor, kp: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
        """Closed form for one demander: every pixel ships all its mass there, ``L = sum_n a_n C_n``.

        Plain autograd suffices (no iteration); the denominator is made safe for dead joints so
        that their loss and gradient are exactly 0 rather than NaN.
        """
        pos, _ = naive_demanders(kp)
        cost = transport_cost(pos, height, width)[:, 0, :]
        r = torch.relu(h)
        total = r.sum(-1)
        dead = ~(total > 0)
        a = r / torch.where(dead, torch.ones_like(total), total)[:, None]
        return (a * cost).sum(-1), dead



def codec_for(hdm: dict[str, Any]) -> str:
    """HDM learns the dots; with ``suppliers: softmax`` its decoder reads softmax(h), what it trained on."""
    return "hdm_softmax" if hdm["suppliers"] == "softmax" else "hdm"


CODECS = register_loss_codecs(LossCodecs("hdm", ("hdm", "hdm_softmax"), pick_default=codec_for))
