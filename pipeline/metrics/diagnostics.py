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
  training loss and the increase of the validation metric.
"""
from __future__ import annotations

import math
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
