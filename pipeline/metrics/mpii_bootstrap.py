"""Paired bootstrap over evaluation images for MPII Mean PCKh.

The sampling unit is the image, not the person: people of one image share its difficulty
(crowding, occlusion, blur, scale), so their correctness is correlated, and resampling people
independently would count each image's evidence as if it were several independent draws and
give intervals that are too narrow. Each resample draws images with replacement and every person
of a drawn image comes along, as many times as the image is drawn.

MPII's Mean PCKh pools joints: it is (correct visible joints) / (visible joints) over all
people, pelvis and thorax excluded. Drawing person ``n`` ``c`` times therefore adds ``c`` times
its correct and its visible joint counts, so a resample's Mean is a ratio of two weighted sums
and 1,000 resamples are two matrix-vector products. Correctness itself comes from
:mod:`pipeline.metrics.mpii` (:func:`~pipeline.metrics.mpii.normalized_errors`,
:func:`~pipeline.metrics.mpii.joint_correct`, :func:`~pipeline.metrics.mpii.mean_joints`), so
the bootstrap scores exactly what the table reports: with all counts 1,
:func:`weighted_pckh` equals ``mpii.pckh(...)["Mean"]``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PipelineError
from ..io import atomic_path
from . import mpii as mpii_metrics
from .coco_bootstrap import paired_intervals
from .uncertainty import Interval


@dataclass(frozen=True, eq=False)
class MpiiCorrect:
    """Per-person, per-joint PCKh correctness of one run.

    Attributes:
        correct: (N, 16) bool, joint visible and within ``threshold`` head sizes.
        visible: (N, 16) bool, joint labelled in the ground truth (``jnt_missing == 0``).
        in_mean: (16,) bool, joint pooled into Mean (not pelvis, not thorax).
        threshold: the PCKh threshold (0.5 for PCKh@0.5).
        image_ids: (N,) int64, the image of each person (the bootstrap's sampling unit); None in
            files written before image ids were stored (the bootstrap then needs them from the
            annotation file, :func:`with_image_ids`).
    """

    correct: np.ndarray
    visible: np.ndarray
    in_mean: np.ndarray
    threshold: float = 0.5
    image_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.correct.shape != self.visible.shape or self.correct.ndim != 2:
            raise ValueError(f"MpiiCorrect: correct {self.correct.shape} and visible "
                             f"{self.visible.shape} must be the same (N, J) shape")
        if self.in_mean.shape != (self.correct.shape[1],):
            raise ValueError(f"MpiiCorrect: in_mean has shape {self.in_mean.shape}")
        if self.image_ids is not None and np.shape(self.image_ids) != (self.correct.shape[0],):
            raise ValueError(f"MpiiCorrect: image_ids has shape {np.shape(self.image_ids)}, "
                             f"expected ({self.correct.shape[0]},)")

    @property
    def n_people(self) -> int:
        """Number of evaluation people."""
        return int(self.correct.shape[0])

    def image_groups(self) -> tuple[int, np.ndarray]:
        """(number of images, (N,) index of each person's image): how a count per image becomes a
        count per person.

        Raises:
            PipelineError: the file has no image ids (resampling people instead would understate
            the interval, so there is no silent fallback).
        """
        if self.image_ids is None:
            raise PipelineError("MPII bootstrap", "no image id per person: rerun the evaluation (it stores "
                                                  "them) or add them from the annotation file")
        uniq, index = np.unique(np.asarray(self.image_ids, dtype=np.int64), return_inverse=True)
        return int(uniq.size), index.reshape(-1)

    @property
    def correct_per_person(self) -> np.ndarray:
        """(N,) number of correct Mean joints of each person."""
        return (self.correct & self.in_mean[None, :]).sum(axis=1)

    @property
    def visible_per_person(self) -> np.ndarray:
        """(N,) number of visible Mean joints of each person."""
        return (self.visible & self.in_mean[None, :]).sum(axis=1)


def mpii_person_correct(preds: np.ndarray, gt: Mapping[str, Any] | str | Path,
                        threshold: float = 0.5, image_ids: Any = None) -> MpiiCorrect:
    """Per-person correctness of 0-based (N, 16, 2) predictions, as :func:`mpii.pckh` scores them.

    ``gt`` is the ``gt_valid.mat`` path or the dict of :func:`mpii.load_gt_valid`; ``image_ids``
    (N,) the image of each person (the records' ``image_id``, in the same order), which the
    bootstrap resamples.
    """
    if isinstance(gt, (str, Path)):
        g = mpii_metrics.load_gt_valid(gt)
    else:  # same checks and joint-name handling as mpii.pckh
        g = mpii_metrics.check_gt(gt, "gt", require_names=False)
    scaled, visible = mpii_metrics.normalized_errors(preds, g)  # (16, N) each; checks shapes
    names = g["dataset_joints"]
    correct = mpii_metrics.joint_correct(scaled, visible, threshold)
    ids = None if image_ids is None else np.asarray(image_ids, dtype=np.int64).reshape(-1)
    return MpiiCorrect(correct=correct.T.copy(), visible=visible.T.copy(),
                       in_mean=mpii_metrics.mean_joints(names), threshold=float(threshold), image_ids=ids)


def with_image_ids(m: MpiiCorrect, image_ids: Any) -> MpiiCorrect:
    """``m`` with the image of each person (for files written without them)."""
    return MpiiCorrect(correct=m.correct, visible=m.visible, in_mean=m.in_mean, threshold=m.threshold,
                       image_ids=np.asarray(image_ids, dtype=np.int64).reshape(-1))


def save_correct(m: MpiiCorrect, path: str | Path) -> None:
    """Write the correctness tables as a compressed ``.npz``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        extra = {} if m.image_ids is None else {"image_ids": np.asarray(m.image_ids, dtype=np.int64)}
        np.savez_compressed(fh, correct=m.correct, visible=m.visible, in_mean=m.in_mean,
                            threshold=np.float64(m.threshold), **extra)


def load_correct(path: str | Path) -> MpiiCorrect:
    """Read what :func:`save_correct` wrote; a missing or foreign file stops with one line naming it."""
    p = Path(path)
    if not p.is_file():
        raise PipelineError(str(p), "file not found")
    try:
        with np.load(p, allow_pickle=False) as data:
            ids = data["image_ids"].astype(np.int64) if "image_ids" in data.files else None
            return MpiiCorrect(correct=data["correct"].astype(bool), visible=data["visible"].astype(bool),
                               in_mean=data["in_mean"].astype(bool), threshold=float(data["threshold"]),
                               image_ids=ids)
    except Exception as exc:  # BadZipFile, KeyError (a foreign .npz), ValueError (shapes)
        raise PipelineError(str(p), f"not an MPII correctness file ({type(exc).__name__}: {exc})") from None


def weighted_pckh(m: MpiiCorrect, counts: np.ndarray) -> np.ndarray:
    """Mean PCKh (percent) for each row of person counts; (R,) floats.

    ``counts[r, n]`` is how many times person ``n`` counts in resample ``r`` (a 1-D vector is
    one row). Joints are pooled, i.e. each weighted by its visible count, as MPII's Mean is. A
    row with no visible Mean joint has no PCKh: NaN.
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim == 1:
        c = c[None, :]
    if c.ndim != 2 or c.shape[1] != m.n_people:
        raise ValueError(f"counts has shape {np.shape(counts)}, expected (R, {m.n_people})")
    if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise ValueError("counts must be finite and non-negative")
    n_correct = c @ m.correct_per_person.astype(np.float64)
    n_visible = c @ m.visible_per_person.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n_visible > 0, 100.0 * n_correct / n_visible, np.nan)


def _check_same_people(m_a: MpiiCorrect, m_b: MpiiCorrect) -> None:
    """Pairing by person needs the same people, ground truth and threshold in both runs."""
    if m_a.n_people != m_b.n_people:
        raise PipelineError("paired bootstrap", f"the two runs have {m_a.n_people} and "
                                                f"{m_b.n_people} people; they must be scored on the same set")
    if not np.array_equal(m_a.visible, m_b.visible) or not np.array_equal(m_a.in_mean, m_b.in_mean):
        bad = np.flatnonzero((m_a.visible != m_b.visible).any(axis=1))
        raise PipelineError("paired bootstrap", f"the two runs were scored against different ground truth "
                                                f"(visible joints differ for {bad.size} people, e.g. {bad[:5].tolist()})")
    if m_a.threshold != m_b.threshold:
        raise PipelineError("paired bootstrap", f"PCKh thresholds differ: {m_a.threshold} vs {m_b.threshold}")
    if m_a.image_ids is not None and m_b.image_ids is not None and not np.array_equal(m_a.image_ids, m_b.image_ids):
        raise PipelineError("paired bootstrap", "the two runs assign people to different images")


def weighted_pckh_by_image(m: MpiiCorrect, image_counts: np.ndarray) -> np.ndarray:
    """Mean PCKh (percent) for each row of image counts, (R, I): every person of an image counts as
    often as its image is drawn (images in ascending id order, :meth:`MpiiCorrect.image_groups`)."""
    n_images, index = m.image_groups()
    c = np.asarray(image_counts)
    c = c[None, :] if c.ndim == 1 else c
    if c.ndim != 2 or c.shape[1] != n_images:
        raise ValueError(f"image counts have shape {np.shape(image_counts)}, expected (R, {n_images})")
    return weighted_pckh(m, c[:, index])


def paired_bootstrap_pckh(m_a: MpiiCorrect, m_b: MpiiCorrect, resamples: int = 1000, seed: int = 0,
                          level: float = 0.95) -> dict[str, Interval]:
    """Bootstrap intervals of Mean PCKh for two runs and of ``Δ = a − b``, paired by image: both
    runs are scored on the same resampled images, every person of a drawn image included.

    Returns:
        ``{"a": Interval, "b": Interval, "delta": Interval}`` in percent, percentile intervals
        centred on the full-data values.

    Raises:
        PipelineError: the runs' people, images, ground truth or threshold differ, or neither run
        knows the image of each person.
    """
    _check_same_people(m_a, m_b)
    if m_a.image_ids is None:
        m_a = m_a if m_b.image_ids is None else with_image_ids(m_a, m_b.image_ids)
    m_b = m_b if m_b.image_ids is not None or m_a.image_ids is None else with_image_ids(m_b, m_a.image_ids)
    n_images, _ = m_a.image_groups()
    return paired_intervals(weighted_pckh_by_image, m_a, m_b, n_images, resamples=resamples, seed=seed,
                            level=level)


__all__ = ["MpiiCorrect", "mpii_person_correct", "with_image_ids", "save_correct", "load_correct", "weighted_pckh",
           "weighted_pckh_by_image", "paired_bootstrap_pckh"]
