"""Paired bootstrap over evaluation images for COCO keypoint AP, without rerunning COCOeval.

Why: two runs that differ by 0.3 AP on val2017 may differ only because of which 5,000 images
happen to be in val2017. Resampling the images (with replacement) and recomputing both runs'
AP on each resample gives an interval for each AP and -- because both runs are scored on the
*same* resampled images -- a much tighter interval for their difference.

Why not simply call ``COCOeval`` per resample: it takes seconds per call on val2017, so 1,000
resamples would take an hour per pair. But the expensive part of COCOeval, matching detections
to ground truth (OKS + greedy assignment), is per image and does not change when an image is
drawn twice: a resample only changes how many times each image's detections and ground-truth
people count. So we

1. run ``COCOeval.evaluate()`` once (:func:`coco_image_matches`) and keep, per detection, its
   image, score and true-positive / ignored flags at the 10 OKS thresholds, and per image its
   number of non-ignored ground-truth people;
2. recompute ``COCOeval.accumulate()`` + ``summarize()``'s AP for many count vectors at once
   with numpy (:func:`weighted_ap`): image ``i`` drawn ``c`` times contributes ``c`` to the
   cumulative TP/FP of each of its detections and ``c × num_gt[i]`` to the recall denominator.

Exactness: with all counts 1, :func:`weighted_ap` equals pycocotools' AP (area "all",
maxDets 20, OKS 0.50:0.05:0.95, 101 recall points). With integer counts it equals COCOeval on
the physically duplicated data set whose copies of an image get consecutive image ids in the
original image order -- provided no two detections of *one* image share a score. (COCOeval
sorts all detections by score with a stable mergesort after concatenating the images in id
order; with such within-image ties the duplicated data interleaves the copies, ``A B A' B'``,
where the weighted form counts ``A A' B B'``. When tied detections are a TP and an FP the
precision at the recall points inside that tie then differs, by up to a recall step's worth of
AP (~1/number of people). COCOeval's own AP likewise depends on the order of tied detections,
so neither is "the" answer. Ties are exact with all counts 1, and rare in practice: our scores
are full-precision products of box and joint scores.)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from typing import Any, Callable

import numpy as np

from ..data.skeleton import COCO_SIGMAS
from ..errors import PipelineError
from ..io import atomic_path
from . import coco as coco_metrics
from .uncertainty import Interval, percentile_interval

#: Layout version of the ``.npz`` written by :func:`save_matches`.
MATCHES_FORMAT = 1

_ARRAY_FIELDS = ("image_ids", "num_gt", "det_image", "det_score", "tp", "ignored", "iou_thrs", "rec_thrs")

#: Upper bound on resamples × detections per chunk of :func:`weighted_ap` (bounds memory).
_CHUNK_ELEMENTS = 2_000_000


@dataclass(frozen=True, eq=False)
class CocoMatches:
    """What COCOeval's matching decided, per image and per detection (area "all", maxDets 20).

    Detections are stored in COCOeval's accumulate order: images in ascending id order, each
    image's top ``max_dets`` detections by score, then all of them stably sorted by descending
    score. A detection is a true positive at threshold ``t`` when ``tp[t, d]``, ignored (matched
    to a crowd or zero-keypoint person) when ``ignored[t, d]``, a false positive otherwise.

    Attributes:
        image_ids: (I,) ground-truth image ids, ascending.
        num_gt: (I,) number of non-ignored ground-truth people per image (recall denominator).
        det_image: (D,) index into ``image_ids`` of each detection.
        det_score: (D,) detection score.
        tp: (T, D) bool, true positive at each OKS threshold.
        ignored: (T, D) bool, left out of precision and recall at each threshold.
        iou_thrs: (T,) OKS thresholds (0.50:0.05:0.95).
        rec_thrs: (101,) recall points (0:0.01:1).
        max_dets: detections kept per image (20).
    """

    image_ids: np.ndarray
    num_gt: np.ndarray
    det_image: np.ndarray
    det_score: np.ndarray
    tp: np.ndarray
    ignored: np.ndarray
    iou_thrs: np.ndarray
    rec_thrs: np.ndarray
    max_dets: int = 20

    def __post_init__(self) -> None:
        n_img, n_det, n_thr = self.image_ids.shape[0], self.det_score.shape[0], self.iou_thrs.shape[0]
        expected = {
            "image_ids": (n_img,), "num_gt": (n_img,), "det_image": (n_det,), "det_score": (n_det,),
            "tp": (n_thr, n_det), "ignored": (n_thr, n_det), "iou_thrs": (n_thr,),
        }
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"CocoMatches: {name} has shape {getattr(self, name).shape}, expected {shape}")
        if n_det and (self.det_image.min() < 0 or self.det_image.max() >= n_img):
            raise ValueError("CocoMatches: det_image points outside image_ids")
        if np.any(self.tp & self.ignored):
            raise ValueError("CocoMatches: a detection is both a true positive and ignored")

    @property
    def n_images(self) -> int:
        """Number of evaluation images (the bootstrap's sampling unit)."""
        return int(self.image_ids.shape[0])

    @property
    def n_detections(self) -> int:
        """Number of detections that count (at most ``max_dets`` per image)."""
        return int(self.det_score.shape[0])


# ----------------------------------------------------------------------------------------------
# Matching (once per run)
# ----------------------------------------------------------------------------------------------


def _detections_coco(gt, dts: list[dict]):
    """pycocotools results object; an empty one when there are no results (loadRes can't)."""
    if dts:
        return gt.loadRes(dts)
    from pycocotools.coco import COCO

    empty = COCO()
    empty.dataset = {"images": list(gt.dataset["images"]), "annotations": [],
                     "categories": list(gt.dataset["categories"])}
    empty.createIndex()
    return empty


def _run_evaluate(gt, dt, where: str):
    """``COCOeval.evaluate()`` for area "all" only (the other ranges do not enter AP)."""
    from pycocotools.cocoeval import COCOeval

    ev = COCOeval(gt, dt, "keypoints")
    ev.params.kpt_oks_sigmas = np.asarray(COCO_SIGMAS, dtype=np.float64)
    ev.params.areaRng = [ev.params.areaRng[ev.params.areaRngLbl.index("all")]]
    ev.params.areaRngLbl = ["all"]
    if len(ev.params.catIds) != 1:
        raise PipelineError(where, f"ground truth has {len(ev.params.catIds)} categories; "
                                   "the image bootstrap supports one (person)")
    ev.evaluate()
    return ev


def _collect(eval_imgs: Sequence, n_thr: int, max_det: int):
    """Concatenate per-image evaluation records in image order, as COCOeval.accumulate does."""
    num_gt = np.zeros(len(eval_imgs), dtype=np.int64)
    images, scores, matched, ignored = [], [], [], []
    for i, e in enumerate(eval_imgs):
        if e is None:  # no ground truth and no detection on this image
            continue
        num_gt[i] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
        s = np.asarray(e["dtScores"][:max_det], dtype=np.float64)
        images.append(np.full(s.shape[0], i, dtype=np.int64))
        scores.append(s)
        matched.append(np.asarray(e["dtMatches"], dtype=np.float64).reshape(n_thr, -1)[:, :max_det] != 0)
        ignored.append(np.asarray(e["dtIgnore"], dtype=bool).reshape(n_thr, -1)[:, :max_det])
    if not scores:
        return num_gt, np.zeros(0, np.int64), np.zeros(0), np.zeros((n_thr, 0), bool), np.zeros((n_thr, 0), bool)
    return (num_gt, np.concatenate(images), np.concatenate(scores),
            np.concatenate(matched, axis=1), np.concatenate(ignored, axis=1))


def coco_image_matches(gt_file: str | Path, results_file: str | Path | list) -> CocoMatches:
    """Match a run's keypoint results to the ground truth once, the way COCOeval does.

    Runs pycocotools' ``COCOeval(gt, dt, "keypoints").evaluate()`` (17 COCO sigmas, area
    "all", maxDets 20) and keeps its per-image decisions, so the matching -- ignore flags for
    crowd and zero-keypoint people, top-20 detections per image, greedy assignment in score
    order preferring non-ignored people, tie handling -- is COCOeval's own. Inputs are read and
    checked as :func:`pipeline.metrics.coco.evaluate_keypoints` reads them, so every image of
    the ground truth is an evaluation image.

    Raises:
        PipelineError: missing/corrupt ground truth or results (naming file and entry).
    """
    num_joints = int(np.asarray(COCO_SIGMAS).shape[0])
    gt = coco_metrics.load_gt(gt_file, num_joints)
    gt_ids = set(gt.getImgIds())
    dts = coco_metrics.load_results(results_file, gt_ids, num_joints)
    with coco_metrics.quiet_stdout("COCOeval.evaluate (bootstrap matches)"):
        ev = _run_evaluate(gt, _detections_coco(gt, dts), str(gt_file))
    p = ev.params
    image_ids = np.asarray(p.imgIds, dtype=np.int64)  # COCOeval's np.unique: ascending
    max_det = int(p.maxDets[-1])
    num_gt, det_image, det_score, matched, ignored = _collect(ev.evalImgs, len(p.iouThrs), max_det)
    order = np.argsort(-det_score, kind="mergesort")  # accumulate's order
    return CocoMatches(
        image_ids=image_ids,
        num_gt=num_gt,
        det_image=det_image[order],
        det_score=det_score[order],
        tp=(matched & ~ignored)[:, order],
        ignored=ignored[:, order],
        iou_thrs=np.asarray(p.iouThrs, dtype=np.float64),
        rec_thrs=np.asarray(p.recThrs, dtype=np.float64),
        max_dets=max_det,
    )


# ----------------------------------------------------------------------------------------------
# Storage
# ----------------------------------------------------------------------------------------------
def save_matches(m: CocoMatches, path: str | Path) -> None:
    """Write matches as a compressed ``.npz``, atomically (no partial file under ``path``)."""
    arrays = {name: getattr(m, name) for name in _ARRAY_FIELDS}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # a file object: numpy adds no suffix
        np.savez_compressed(fh, format=np.int64(MATCHES_FORMAT), max_dets=np.int64(m.max_dets), **arrays)


def load_matches(path: str | Path) -> CocoMatches:
    """Read matches written by :func:`save_matches`.

    Raises:
        PipelineError: missing, unreadable or inconsistent file (naming it).
    """
    p = Path(path)
    where = str(p)
    if not p.is_file():
        raise PipelineError(where, "file not found")
    try:
        with np.load(p, allow_pickle=False) as data:
            stored = {k: data[k] for k in data.files}
    except Exception as exc:  # numpy raises several types (BadZipFile, ValueError, OSError...)
        raise PipelineError(where, f"not a readable .npz file ({type(exc).__name__}: {exc})") from None
    missing = [k for k in ("format", "max_dets", *_ARRAY_FIELDS) if k not in stored]
    if missing:
        raise PipelineError(where, f"not a COCO matches file (missing {', '.join(missing)})")
    if int(stored["format"]) != MATCHES_FORMAT:
        raise PipelineError(where, f"matches format {int(stored['format'])}, expected {MATCHES_FORMAT}")
    try:
        return CocoMatches(max_dets=int(stored["max_dets"]), **{k: stored[k] for k in _ARRAY_FIELDS})
    except ValueError as exc:
        raise PipelineError(where, str(exc)) from None


# ----------------------------------------------------------------------------------------------
# Resampling and weighted AP
# ----------------------------------------------------------------------------------------------
def resample_counts(n_images: int, resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """(R, I) int64: how many times each image is drawn in each bootstrap resample.

    Each row is a multinomial draw of ``n_images`` images with equal probabilities (= sampling
    with replacement). Apply the same matrix to both runs of a comparison: that pairs them by
    image, so image difficulty cancels in the difference.
    """
    if n_images < 1:
        raise ValueError(f"resample_counts: need at least one image, got {n_images}")
    if resamples < 1:
        raise ValueError(f"resample_counts: need at least one resample, got {resamples}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=resamples).astype(np.int64)


def _check_counts(counts: np.ndarray, n_images: int) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim == 1:
        c = c[None, :]
    if c.ndim != 2 or c.shape[1] != n_images:
        raise ValueError(f"counts has shape {np.shape(counts)}, expected (R, {n_images})")
    if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise ValueError("counts must be finite and non-negative")
    return c


def _first_at_least(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Row-wise ``searchsorted(row, thresholds, side="left")`` for non-decreasing rows.

    The index of the first value >= threshold k equals the number of values < threshold k,
    i.e. of values whose count of thresholds <= value is at most k. One ``searchsorted`` into
    the (shared) thresholds and a row-wise histogram give that for all rows at once, with the
    same float comparisons as the per-row search.
    """
    rows, _ = values.shape
    k = thresholds.shape[0]
    j = np.searchsorted(thresholds, values, side="right")  # (rows, D) in 0..k
    flat = (j + (k + 1) * np.arange(rows)[:, None]).ravel()
    hist = np.bincount(flat, minlength=rows * (k + 1)).reshape(rows, k + 1)
    return np.cumsum(hist, axis=1)[:, :k]


def _precision_at_recall(w: np.ndarray, tp: np.ndarray, fp: np.ndarray, npig: np.ndarray,
                         rec_thrs: np.ndarray) -> np.ndarray:
    """(r, len(rec_thrs)) interpolated precision for one OKS threshold, as COCOeval.accumulate.

    ``w`` (r, D) weights of the score-sorted detections; ``tp``/``fp`` (D,) bool.
    """
    n_det = w.shape[1]
    if n_det == 0:
        return np.zeros((w.shape[0], rec_thrs.shape[0]))
    tp_sum = np.cumsum(w * tp, axis=1)
    fp_sum = np.cumsum(w * fp, axis=1)
    rc = tp_sum / npig[:, None]
    pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    envelope = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # max precision to the right
    idx = _first_at_least(rc, rec_thrs)
    q = np.take_along_axis(envelope, np.minimum(idx, n_det - 1), axis=1)
    return np.where(idx < n_det, q, 0.0)  # recall never reached: precision 0


def weighted_ap(m: CocoMatches, counts: np.ndarray) -> np.ndarray:
    """COCO keypoint AP (area "all", maxDets 20) for each row of image counts; (R,) floats.

    ``counts[r, i]`` is how many times image ``i`` counts in resample ``r`` (a 1-D vector is one
    row). AP is the mean over the 10 OKS thresholds and 101 recall points of the interpolated
    precision, computed as COCOeval.accumulate/summarize do (see the module docstring for
    exactness). A row without any non-ignored ground-truth person has no AP: NaN (COCOeval's
    -1). Rows are processed in chunks so memory stays bounded on val2017-sized inputs.
    """
    c = _check_counts(counts, m.n_images)
    order = np.argsort(-m.det_score, kind="mergesort")  # already so when from coco_image_matches
    det_image = m.det_image[order]
    tp = m.tp[:, order]
    fp = ~m.tp[:, order] & ~m.ignored[:, order]
    n_det = det_image.shape[0]
    chunk = max(1, _CHUNK_ELEMENTS // max(n_det, 1))
    out = np.empty(c.shape[0])
    for start in range(0, c.shape[0], chunk):
        rows = c[start:start + chunk]
        w = rows[:, det_image]
        npig = rows @ m.num_gt.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.stack([_precision_at_recall(w, tp[t], fp[t], npig, m.rec_thrs)
                          for t in range(tp.shape[0])], axis=1)  # (r, T, 101)
        ap = q.reshape(q.shape[0], -1).mean(axis=1)
        out[start:start + chunk] = np.where(npig > 0, ap, np.nan)
    return out


# ----------------------------------------------------------------------------------------------
# Paired bootstrap
# ----------------------------------------------------------------------------------------------
def _check_same_images(m_a: CocoMatches, m_b: CocoMatches) -> None:
    """Both runs must be scored on the same images with the same ground truth to be paired."""
    ids_a, ids_b = set(m_a.image_ids.tolist()), set(m_b.image_ids.tolist())
    if ids_a != ids_b:
        only_a, only_b = sorted(ids_a - ids_b), sorted(ids_b - ids_a)
        raise PipelineError(
            "paired bootstrap",
            f"the two runs were scored on different images: {len(only_a)} only in run a "
            f"(e.g. {only_a[:5]}), {len(only_b)} only in run b (e.g. {only_b[:5]})",
        )
    if not np.array_equal(m_a.num_gt, m_b.num_gt):
        bad = m_a.image_ids[m_a.num_gt != m_b.num_gt]
        raise PipelineError(
            "paired bootstrap",
            f"the two runs were scored against different ground truth: the number of people "
            f"differs on {bad.size} images (e.g. {bad[:5].tolist()})",
        )


def paired_bootstrap(m_a: CocoMatches, m_b: CocoMatches, resamples: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict[str, Interval]:
    """Bootstrap intervals of AP for two runs and of ``Δ = AP_a − AP_b``, paired by image.

    Both runs are scored on the same resampled image multisets, so the interval of Δ reflects
    only how differently the two runs do on the images, not how hard the drawn images are.

    Returns:
        ``{"a": Interval, "b": Interval, "delta": Interval}``: percentile intervals (method
        ``"bootstrap"``) centred on the full-data AP / Δ.

    Raises:
        PipelineError: the runs' image sets (or ground truth) differ, naming what differs.
    """
    _check_same_images(m_a, m_b)
    return paired_intervals(weighted_ap, m_a, m_b, m_a.n_images, resamples=resamples, seed=seed, level=level)


def paired_intervals(metric: Callable[[Any, np.ndarray], np.ndarray], m_a: Any, m_b: Any, n_units: int, *,
                     resamples: int, seed: int, level: float) -> dict[str, Interval]:
    """The paired bootstrap shared by COCO (units: images) and MPII (units: people): ``metric(m, counts)``
    of both runs on the same resampled counts (row 0: the full data, the point estimate)."""
    counts = np.vstack([np.ones((1, n_units), dtype=np.int64), resample_counts(n_units, resamples, seed)])
    va, vb = metric(m_a, counts), metric(m_b, counts)
    delta = va - vb
    return {name: percentile_interval(v[1:], float(v[0]), level)
            for name, v in (("a", va), ("b", vb), ("delta", delta))}


__all__ = [
    "CocoMatches", "coco_image_matches", "save_matches", "load_matches", "resample_counts",
    "weighted_ap", "paired_bootstrap",
]
