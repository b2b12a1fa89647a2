"""Diagnostics of one trained run that explain its table numbers, computed in heatmap pixels.

Why these: the AP of a run hides *how* it fails. Measured on the demo, HDM runs trained from random
weights passed through a "symmetric collapse" stage in which the left and right joints of a pair (and
the five face joints) shared one heatmap; those joints have COCO's smallest OKS sigmas, so AP75 was 0
although the median error of the other joints was fine. The diagnostics below separate these cases:

- :func:`joint_errors`: the median localisation error per joint (heatmap px) over visible joints;
- :func:`separation_ratios`: for each symmetric pair (left, right), the median over people of the
  predicted left-right distance divided by the true one. About 1 for a model that tells the sides
  apart; near 0 when both sides of the pair land on one spot. Below :data:`COLLAPSE_RATIO` a pair is
  flagged as collapsed;
- :func:`dead_fractions`: the share of heatmaps without a positive pixel per joint (nothing to decode;
  HDM's suppliers ``relu(h)/sum(relu(h))`` are undefined there);
- :func:`loss_metric_consistency`: the paper's Sec. 4 claim that MSE's training loss and AP are
  inconsistent, measured as the Spearman rank correlation between the epoch-to-epoch decrease of the
  training loss and the increase of the validation metric;
- :class:`MechanismTally` (per validation epoch, every loss): the share of positive heatmap pixels,
  the share of ground-truth dots sitting on a non-positive pixel (Eq. 3's relu passes no gradient
  there), separation ratios and joint errors, accumulated batch by batch;
- :func:`convergence_summary`: Sinkhorn iterations needed per tolerance on a run's own heatmaps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import stats

COLLAPSE_RATIO = 0.3  # predicted / true left-right separation below this: the pair is collapsed
MIN_TRUE_SEPARATION = 1.0  # heatmap px: people whose pair is closer than this say nothing about it


def joint_errors(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Median Euclidean error per joint over the people where it is visible; NaN where never visible.

    ``pred`` and ``gt`` are (N, K, 2) in heatmap pixels, ``visible`` (N, K) truthy where labelled.
    """
    err = np.linalg.norm(np.asarray(pred, float) - np.asarray(gt, float), axis=-1)
    vis = np.asarray(visible) > 0
    out = np.full(err.shape[1], np.nan)
    for k in range(err.shape[1]):
        if vis[:, k].any():
            out[k] = float(np.median(err[vis[:, k], k]))
    return out


def separation_ratios(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray,
                      pairs: Sequence[tuple[int, int]]) -> dict[tuple[int, int], float]:
    """Median over people of |pred_l − pred_r| / |gt_l − gt_r| per symmetric pair (both joints visible
    and at least :data:`MIN_TRUE_SEPARATION` apart); NaN for a pair with no such person."""
    pred, gt = np.asarray(pred, float), np.asarray(gt, float)
    vis = np.asarray(visible) > 0
    out: dict[tuple[int, int], float] = {}
    for a, b in pairs:
        true_sep = np.linalg.norm(gt[:, a] - gt[:, b], axis=-1)
        use = vis[:, a] & vis[:, b] & (true_sep >= MIN_TRUE_SEPARATION)
        if not use.any():
            out[(a, b)] = math.nan
            continue
        pred_sep = np.linalg.norm(pred[use, a] - pred[use, b], axis=-1)
        out[(a, b)] = float(np.median(pred_sep / true_sep[use]))
    return out


def pair_name(a: str, b: str) -> str:
    """"left_eye", "right_eye" → "eye"; "r_ankle", "l_ankle" → "ankle" (the name without its side)."""
    sides = {"l", "r", "left", "right"}
    words = [w for w in a.split("_") if w not in sides]
    return "_".join(words) or f"{a}/{b}"


def collapsed_pairs(ratios: dict[tuple[int, int], float]) -> list[tuple[int, int]]:
    """The pairs whose separation ratio is below :data:`COLLAPSE_RATIO` (NaN is not flagged)."""
    return [pair for pair, r in ratios.items() if r == r and r < COLLAPSE_RATIO]


def dead_fractions(peaks: np.ndarray) -> np.ndarray:
    """Share of heatmaps per joint whose largest value is ≤ 0 (``peaks``: (N, K) per-heatmap maxima)."""
    peaks = np.asarray(peaks, float)
    if len(peaks) == 0:
        return np.full(peaks.shape[1] if peaks.ndim == 2 else 0, np.nan)
    return (peaks <= 0).mean(axis=0)


def loss_metric_consistency(loss: Sequence[float], metric: Sequence[float]) -> tuple[float, int]:
    """(Spearman ρ, number of epoch steps) between the loss decrease and the metric increase from one
    epoch to the next. ρ near 1: a lower loss came with a better metric; near 0: unrelated. NaN with
    fewer than 3 steps or a constant series."""
    loss, metric = np.asarray(loss, float), np.asarray(metric, float)
    keep = np.isfinite(loss) & np.isfinite(metric)
    loss, metric = loss[keep], metric[keep]
    drop, gain = -np.diff(loss), np.diff(metric)
    n = len(drop)
    if n < 3 or np.ptp(drop) == 0 or np.ptp(gain) == 0:
        return math.nan, n
    return float(stats.spearmanr(drop, gain).statistic), n


# --------------------------------------------------------------------------- per-epoch mechanism
# Why: HDM's suppliers are relu(h)/sum(relu(h)) (Eq. 3). relu has no gradient where h <= 0, so a
# heatmap that is not positive at its ground-truth dot gets no push to put mass there; the share of
# positive pixels and of non-positive dots, tracked per epoch beside the separation ratios and the
# joint errors, shows whether (and when) a run falls into that trap, for every loss alike.
def nearest_pixel_values(heat: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(N, K)`` value of each heatmap ``heat (N, K, H, W)`` at the pixel nearest to its point
    ``points (N, K, 2)`` (``(x, y)`` heatmap px, pixel ``(row i, col j)`` centred at ``(j, i)``).

    Pixel ``j`` covers ``[j - 0.5, j + 0.5)``, so the nearest one is ``floor(x + 0.5)``; points
    past the outer pixel centres (the dataset keeps dots up to half a pixel outside) read the border
    pixel. Non-finite points read NaN.
    """
    heat = np.asarray(heat)
    pts = np.asarray(points, dtype=np.float64)
    n, k, h, w = heat.shape
    finite = np.isfinite(pts).all(-1)
    safe = np.where(finite[..., None], pts, 0.0)
    col = np.clip(np.floor(safe[..., 0] + 0.5), 0, w - 1).astype(np.int64)
    row = np.clip(np.floor(safe[..., 1] + 0.5), 0, h - 1).astype(np.int64)
    vals = heat[np.arange(n)[:, None], np.arange(k)[None, :], row, col].astype(np.float64)
    return np.where(finite, vals, np.nan)


@dataclass
class MechanismTally:
    """Running totals of one validation pass, fed batch by batch (the heatmaps are never kept).

    :meth:`add` takes one batch: the raw network heatmaps ``(B, K, H, W)`` and the ground-truth dots
    ``(B, K, 2)`` and weights ``(B, K)`` of the same crops (heatmap px; weight > 0: visible and
    inside the crop, the joints a loss trains on). :meth:`summary` takes the decoded predictions
    of the same people, in the same order, and gives the numbers (see there).
    """

    positive: int = 0
    pixels: int = 0
    gt_nonpositive: int = 0
    gt_weighted: int = 0
    gt: list = field(default_factory=list)
    weight: list = field(default_factory=list)

    def add(self, heat: np.ndarray, keypoints: np.ndarray, weight: np.ndarray) -> None:
        heat = np.asarray(heat)
        w = np.asarray(weight, dtype=np.float64) > 0
        self.positive += int((heat > 0).sum())
        self.pixels += int(heat.size)
        at_dot = nearest_pixel_values(heat, keypoints)
        self.gt_nonpositive += int((at_dot[w] <= 0).sum())
        self.gt_weighted += int(w.sum())
        self.gt.append(np.asarray(keypoints, dtype=np.float64))
        self.weight.append(w)

    def summary(self, pred: np.ndarray, joints: Sequence[str],
                pairs: Sequence[tuple[int, int]]) -> dict[str, float]:
        """From the decoded ``pred (N, K, 2)`` (heatmap px): ``pos_share`` (share of all pixels with
        h > 0), ``gt_nonpos_share`` (share of weighted dots whose nearest pixel holds h <= 0),
        ``sep_ratio`` (median over pairs of :func:`separation_ratios`) with ``sep_ratio.<pair>``,
        ``collapsed_pairs``, ``joint_err`` (median error over every weighted joint of every person,
        heatmap px) with ``joint_err.<joint>`` (:func:`joint_errors`). Undefined values are NaN."""
        k = len(joints)
        pred = np.asarray(pred, dtype=np.float64).reshape(-1, k, 2)
        gt = np.concatenate(self.gt) if self.gt else np.zeros((0, k, 2))
        vis = np.concatenate(self.weight) if self.weight else np.zeros((0, k), dtype=bool)
        if pred.shape != gt.shape:
            raise ValueError(f"predictions {pred.shape} do not match the tallied people {gt.shape}")
        out = {"pos_share": _share(self.positive, self.pixels),
               "gt_nonpos_share": _share(self.gt_nonpositive, self.gt_weighted)}
        ratios = separation_ratios(pred, gt, vis, pairs)
        finite = [r for r in ratios.values() if r == r]
        out["sep_ratio"] = float(np.median(finite)) if finite else math.nan
        out.update({f"sep_ratio.{pair_name(joints[a], joints[b])}": r for (a, b), r in ratios.items()})
        out["collapsed_pairs"] = float(len(collapsed_pairs(ratios)))
        err = np.linalg.norm(pred - gt, axis=-1)
        out["joint_err"] = float(np.median(err[vis])) if vis.any() else math.nan
        out.update({f"joint_err.{joints[j]}": float(e) for j, e in enumerate(joint_errors(pred, gt, vis))})
        return out


def _share(part: int, whole: int) -> float:
    return part / whole if whole else math.nan


# --------------------------------------------------------------------------- Sinkhorn convergence
def convergence_summary(iterations: np.ndarray, tolerances: Sequence[float], cap: int,
                        epsilon: float) -> dict:
    """Table 5's iteration count measured on a run's heatmaps: ``iterations (M, T)`` holds, per
    heatmap and tolerance, the Sinkhorn updates needed until the largest column-marginal error fell
    below the tolerance (``cap`` where it never did). Median, 95th percentile and maximum per
    tolerance; NaN (JSON null after the caller's conversion) with no heatmap."""
    it = np.asarray(iterations, dtype=np.float64).reshape(-1, len(tolerances))

    def stat(fn) -> list[float | None]:
        return [float(fn(it[:, t])) if len(it) else None for t in range(len(tolerances))]

    return {"tolerances": [float(t) for t in tolerances], "iterations_median": stat(np.median),
            "iterations_p95": stat(lambda v: np.percentile(v, 95)), "iterations_max": stat(np.max),
            "cap": int(cap), "heatmaps": int(len(it)), "epsilon_effective": float(epsilon)}
