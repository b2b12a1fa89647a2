"""Sec. 4's claim ("the MSE loss is inconsistent with the metric") measured where it lives: per
validation person, the trained model's own training loss beside its accuracy.

File ``<eval_dir>/consistency_val.npz`` (:data:`CONSISTENCY_FILE`; ``eval_dir`` is
``results/<profile>/eval/<run>/seed<k>/``, beside the ``*.boot.npz`` files), written by the
evaluation stage from the val split with ground-truth boxes and no flip test (the crops of the
per-epoch validation). One entry per val person with at least one weighted joint (visible and
inside the crop), in the order of the val records:

- ``image_id`` (int64): the person's image, the unit a per-image aggregation groups by;
- ``loss`` (float64): the run's training criterion on that person alone (a one-person batch);
- ``oks`` (float64): COCO's object keypoint similarity of the prediction with the ground truth
  (:func:`object_keypoint_similarity`); NaN for MPII;
- ``pckh`` (float64): MPII's PCKh@0.5 of the person (:func:`person_pckh`); NaN for COCO;
- ``joint_err`` (float64): mean error over the person's weighted joints, heatmap pixels.

The prediction is the run's own decoding of the raw (unflipped) heatmaps the loss is computed on.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_path
from .mpii_bootstrap import mpii_person_correct

CONSISTENCY_FILE = "consistency_val.npz"
FIELDS = ("image_id", "loss", "oks", "pckh", "joint_err")
PCKH_THRESHOLD = 0.5


def object_keypoint_similarity(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, area: np.ndarray,
                               sigmas: np.ndarray) -> np.ndarray:
    """``(N,)`` OKS per person, as pycocotools' ``COCOeval.computeOks`` scores a detection against its
    ground truth: ``mean over labelled joints of exp(-d² / (2 · area · (2σ)²))`` with ``d`` the image
    distance, ``area`` the annotation's area (plus float eps, as there). ``pred``, ``gt``: ``(N, K, 2)``
    image pixels; ``visible``: ``(N, K)``, COCO's ``v > 0``. NaN for a person with no labelled joint
    (COCO falls back to the box there; those people are not in the file)."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    vis = np.asarray(visible) > 0
    var = (2.0 * np.asarray(sigmas, np.float64)) ** 2
    d2 = ((pred - gt) ** 2).sum(-1)
    e = d2 / var[None, :] / (np.asarray(area, np.float64)[:, None] + np.spacing(1)) / 2.0
    n = vis.sum(1)
    with np.errstate(invalid="ignore"):
        return np.where(n > 0, np.where(vis, np.exp(-e), 0.0).sum(1) / np.maximum(n, 1), np.nan)


def person_pckh(pred: np.ndarray, gt_valid: Mapping[str, Any] | str | Path,
                threshold: float = PCKH_THRESHOLD) -> np.ndarray:
    """``(N,)`` per person: the share of its visible joints pooled into MPII's Mean (all but pelvis
    and thorax) within ``threshold`` head sizes, scored exactly as the table's PCKh
    (:func:`pipeline.metrics.mpii_bootstrap.mpii_person_correct`); NaN for a person with none.
    ``pred``: (N, 16, 2), 0-based image pixels, in the order of ``gt_valid``."""
    m = mpii_person_correct(pred, gt_valid, threshold)
    n = m.visible_per_person
    return np.where(n > 0, m.correct_per_person / np.maximum(n, 1), np.nan)


def mean_joint_error(pred: np.ndarray, gt: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``(N,)`` mean Euclidean error over each person's weighted joints (NaN where none)."""
    err = np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(gt, np.float64), axis=-1)
    w = np.asarray(weight) > 0
    n = w.sum(1)
    return np.where(n > 0, np.where(w, err, 0.0).sum(1) / np.maximum(n, 1), np.nan)


def save_consistency(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write the per-person arrays (:data:`FIELDS`, one length) as a compressed ``.npz``, atomically."""
    n = {len(np.asarray(arrays[f])) for f in FIELDS}
    if len(n) != 1:
        raise ValueError(f"consistency arrays differ in length: { {f: len(arrays[f]) for f in FIELDS} }")
    out = {f: np.asarray(arrays[f], dtype=np.int64 if f == "image_id" else np.float64) for f in FIELDS}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **out)


def load_consistency(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {f: z[f] for f in FIELDS}
