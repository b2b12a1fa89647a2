"""Sec. 4 of the paper, per image: does a run's own training loss rank the validation images the way the
metric does?

The paper argues that MSE's loss is inconsistent with the keypoint metric: a lower MSE need not mean a
better pose. Looking across epochs mixes that question with the learning-rate schedule (both curves
jump at the lr step), so the report looks across images instead. The evaluation writes, per run and
seed, ``results/<profile>/eval/<run>/seed<k>/consistency_val.npz`` with per-person arrays ``image_id``,
``loss`` (the run's training loss on that person), ``oks`` (COCO) and ``pckh`` (MPII: the person's share
of joints within 0.5 head size). Per image the report takes the mean over its people, then Spearman's ρ
between per-image loss and per-image metric: a loss consistent with the metric has ρ near −1.

Per run: ρ per seed, averaged over *distinct* seeds (seeds whose arrays agree to ``rtol`` 1e-6 are one
replicate, not several). Interval: a percentile bootstrap over images (1,000 resamples, fixed seed); a
percentile interval of a correlation never leaves [−1, 1]. For an MSE/HDM pair of one dataset and
architecture, ρ_MSE − ρ_HDM is bootstrapped on the same image resamples for both runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..metrics.uncertainty import Interval, percentile_interval

CONSISTENCY_FILE = "consistency_val.npz"
RESAMPLES = 1000
SEED = 0
#: Seeds whose loss and metric arrays agree to this relative tolerance count as one replicate.
SAME_RTOL = 1e-6

#: run, seed → that run's training folder, ``results/<profile>/runs/<run>/seed<k>/`` (``Paths.run_dir``).
RunDirFn = Callable[[str, int], Path]


def metric_key(run: str) -> str:
    """The per-person metric of a run's dataset: "oks" (COCO) or "pckh" (MPII)."""
    return "pckh" if run.startswith("mpii_") else "oks"


@dataclass(frozen=True)
class SeedArrays:
    """One seed's per-person loss and metric, and the per-image means the statistic uses."""

    image_ids: np.ndarray  # (I,) sorted unique image ids that have at least one usable person
    loss: np.ndarray  # (I,) mean training loss over the image's people
    metric: np.ndarray  # (I,) mean OKS / PCKh share over the image's people
    person_loss: np.ndarray
    person_metric: np.ndarray


def load_seed(path: Path, metric: str) -> SeedArrays:
    """Read one ``consistency_val.npz`` and average per image (people with a NaN loss or metric are left
    out: an OKS or PCKh share is undefined for a person without labelled joints)."""
    with np.load(path, allow_pickle=False) as data:
        ids = np.asarray(data["image_id"], dtype=np.int64).reshape(-1)
        loss = np.asarray(data["loss"], dtype=np.float64).reshape(-1)
        value = np.asarray(data[metric], dtype=np.float64).reshape(-1)
    return per_image(ids, loss, value)


def per_image(ids: np.ndarray, loss: np.ndarray, value: np.ndarray) -> SeedArrays:
    """Mean of loss and metric over the usable people of each image."""
    ok = np.isfinite(loss) & np.isfinite(value)
    uniq, inv = np.unique(ids[ok], return_inverse=True)
    n = np.bincount(inv, minlength=uniq.size).astype(np.float64)
    return SeedArrays(uniq, np.bincount(inv, loss[ok], uniq.size) / n, np.bincount(inv, value[ok], uniq.size) / n,
                      loss, value)


def distinct(seeds: Mapping[int, SeedArrays]) -> list[int]:
    """The seeds that are separate replicates: a seed identical to an earlier one up to float rounding
    (``np.allclose`` of loss and metric, rtol 1e-6) adds no information and is left out."""
    kept: list[int] = []
    for s in sorted(seeds):
        a = seeds[s]
        if not any(_same(a, seeds[k]) for k in kept):
            kept.append(s)
    return kept


def _same(a: SeedArrays, b: SeedArrays) -> bool:
    return (a.person_loss.shape == b.person_loss.shape and a.person_metric.shape == b.person_metric.shape
            and np.allclose(a.person_loss, b.person_loss, rtol=SAME_RTOL, atol=0.0, equal_nan=True)
            and np.allclose(a.person_metric, b.person_metric, rtol=SAME_RTOL, atol=0.0, equal_nan=True))


def _aligned(arrays: list[SeedArrays]) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """The images every seed has, and each seed's (loss, metric) on them in one order."""
    common = arrays[0].image_ids
    for a in arrays[1:]:
        common = np.intersect1d(common, a.image_ids)
    return common, [(a.loss[np.searchsorted(a.image_ids, common)], a.metric[np.searchsorted(a.image_ids, common)])
                    for a in arrays]


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman ρ of each row pair of (R, I) arrays (average ranks for ties; NaN for a constant row)."""
    from scipy.stats import rankdata

    rx, ry = rankdata(np.atleast_2d(x), axis=1), rankdata(np.atleast_2d(y), axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx ** 2).sum(axis=1) * (ry ** 2).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, (rx * ry).sum(axis=1) / den, np.nan)


def _mean_rho(pairs: list[tuple[np.ndarray, np.ndarray]], index: np.ndarray) -> np.ndarray:
    """Row r: ρ averaged over the seeds, on the images ``index[r]`` (row 0 may be the full set)."""
    return np.mean([spearman_rows(loss[index], value[index]) for loss, value in pairs], axis=0)


def _resamples(n_images: int, resamples: int, seed: int) -> np.ndarray:
    """(1 + R, I) image positions: row 0 the full set (the point estimate), then R draws with replacement."""
    rng = np.random.default_rng(seed)
    return np.vstack([np.arange(n_images)[None, :], rng.integers(0, n_images, size=(resamples, n_images))])


@dataclass(frozen=True)
class RunConsistency:
    """ρ of one run: the mean over its distinct seeds, with the image-bootstrap interval."""

    run: str
    rho: Interval
    seeds: list[int]
    distinct: list[int]
    images: int
    pairs: list[tuple[np.ndarray, np.ndarray]]
    image_ids: np.ndarray


def run_consistency(run: str, arrays: Mapping[int, SeedArrays], resamples: int = RESAMPLES,
                    seed: int = SEED) -> RunConsistency | None:
    """:class:`RunConsistency` of ``run`` from its seeds' arrays; None with fewer than 3 common images."""
    keep = distinct(arrays)
    if not keep:
        return None
    ids, pairs = _aligned([arrays[s] for s in keep])
    if ids.size < 3:
        return None
    rhos = _mean_rho(pairs, _resamples(ids.size, resamples, seed))
    return RunConsistency(run, _clipped(percentile_interval(rhos[1:], float(rhos[0])), 1.0), sorted(arrays), keep,
                          int(ids.size), pairs, ids)


def pair_difference(mse: RunConsistency, hdm: RunConsistency, resamples: int = RESAMPLES,
                    seed: int = SEED) -> Interval | None:
    """ρ_MSE − ρ_HDM on the images both runs have, both runs on the same image resamples."""
    common = np.intersect1d(mse.image_ids, hdm.image_ids)
    if common.size < 3:
        return None
    index = _resamples(common.size, resamples, seed)

    def on_common(rc: RunConsistency) -> list[tuple[np.ndarray, np.ndarray]]:
        pos = np.searchsorted(rc.image_ids, common)
        return [(loss[pos], value[pos]) for loss, value in rc.pairs]

    diff = _mean_rho(on_common(mse), index) - _mean_rho(on_common(hdm), index)
    return _clipped(percentile_interval(diff[1:], float(diff[0])), 2.0)


def _clipped(iv: Interval, bound: float) -> Interval:
    """Bounds inside the statistic's range (float rounding may step over it by an ulp)."""
    def c(x: float) -> float:
        return x if math.isnan(x) else min(max(x, -bound), bound)

    return Interval(c(iv.mean), c(iv.low), c(iv.high), iv.n, iv.method)


def format_bounds(iv: Interval, bound: float = 1.0) -> str:
    """"-0.42 [-0.51, -0.33]": two decimals, the bounds rounded outwards (the printed interval contains
    the computed one) and never past ±``bound``."""
    if not iv.defined:
        return f"{iv.mean:+.2f} (no interval)"
    lo = max(math.floor(iv.low * 100 + 1e-9) / 100, -bound)
    hi = min(math.ceil(iv.high * 100 - 1e-9) / 100, bound)
    return f"{iv.mean:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def load_run(run: str, seeds: list[int], run_dir: RunDirFn) -> dict[int, SeedArrays]:
    """The arrays of every seed of ``run`` that has a consistency file."""
    out = {}
    for s in seeds:
        path = Path(run_dir(run, s)) / CONSISTENCY_FILE
        if path.is_file():
            out[s] = load_seed(path, metric_key(run))
    return out
