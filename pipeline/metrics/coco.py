"""COCO keypoint evaluation as the official HRNet / SimpleBaseline test does it.

The numbers a top-down pose paper reports on COCO are not the raw network output scored by
pycocotools: every detected person is rescored (box score × mean of its confident joint scores)
and near-duplicate poses of one image are suppressed by OKS-NMS before ``COCOeval`` runs.
Reproducing those two steps exactly is what makes our AP comparable with the published
tables, so they live here next to the scorer (the person detection files that feed the test
are read by :mod:`pipeline.data.coco`).

Facts (HRNet's ``lib/dataset/coco.py`` and ``lib/nms/nms.py``):

* rescoring: ``score = box_score * mean(joint scores > in_vis_thre)`` (0 when no joint passes),
  with ``in_vis_thre = 0.2``;
* OKS-NMS per image at ``oks_thre = 0.9``, the 17 COCO sigmas, the crop's scale-box area
  (``sw*200 * sh*200``) as the area, all joints used (HRNet calls it without ``in_vis_thre``);
* scoring with ``COCOeval(gt, dt, "keypoints")`` over all images of the ground truth.

Run ``python -m pipeline.metrics.coco GT.json RESULTS.json`` to score any results file.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.integrity import check_coco_ids
from ..data.skeleton import COCO_SIGMAS
from ..errors import PipelineError
from ..io import read_json, write_json

log = logging.getLogger(__name__)

#: Keys returned by :func:`evaluate_keypoints`, in the order of ``COCOeval.stats``.
STAT_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL")

_GT_ANN_FIELDS = ("id", "image_id", "category_id", "keypoints", "num_keypoints", "area", "iscrowd", "bbox")


# ----------------------------------------------------------------------------------------------
# OKS and OKS-NMS
# ----------------------------------------------------------------------------------------------
def oks_iou(
    kpts_a: np.ndarray,
    kpts_b: np.ndarray,
    area_a: float,
    areas_b: Sequence[float] | np.ndarray,
    sigmas: np.ndarray | Sequence[float] = COCO_SIGMAS,
    in_vis_thre: float | None = None,
) -> np.ndarray:
    """Object keypoint similarity between one pose and ``M`` others (the NMS overlap).

    This is HRNet's pose-to-pose OKS, not COCOeval's pose-to-ground-truth one: the scale is the
    mean of the two areas and every joint counts (predictions have no visibility flags), so two
    poses with the same joints at the same place have OKS 1 whatever their scores.

    ``e_k = d_k² / (2σ_k)² / ((area_a + area_b)/2 + eps) / 2`` and ``OKS = mean_k exp(-e_k)``.

    With ``in_vis_thre`` only joints whose score in ``kpts_b`` exceeds it are averaged: that is
    what HRNet's code effectively does (its ``list(a) and list(b)`` evaluates to ``list(b)``),
    kept so that results match. OKS is 0 when no joint is used.

    Args:
        kpts_a: ``(K, 3)`` (x, y, score) or ``(K, 2)`` when ``in_vis_thre`` is None.
        kpts_b: ``(M, K, 3)`` (or ``(M, K, 2)``).
        area_a, areas_b: object areas (pixels²) of ``a`` and of each ``b``.
        sigmas: ``(K,)`` per-joint OKS sigmas.
        in_vis_thre: joint-score threshold, or None for all joints.

    Returns:
        ``(M,)`` OKS values in [0, 1].
    """
    a = np.asarray(kpts_a, dtype=np.float64)
    b = np.asarray(kpts_b, dtype=np.float64)
    if b.ndim == 2:
        b = b[None]
    sig = np.asarray(sigmas, dtype=np.float64)
    k = sig.shape[0]
    if a.shape[0] != k or b.shape[1] != k:
        raise ValueError(f"oks_iou: poses have {a.shape[0]} / {b.shape[1]} joints but {k} sigmas")
    areas = np.asarray(areas_b, dtype=np.float64).reshape(-1)
    if areas.shape[0] != b.shape[0]:
        raise ValueError(f"oks_iou: {b.shape[0]} poses but {areas.shape[0]} areas")
    if b.shape[0] == 0:
        return np.zeros(0)
    var = (2.0 * sig) ** 2
    d2 = ((b[:, :, :2] - a[None, :, :2]) ** 2).sum(axis=-1)  # (M, K)
    scale = (float(area_a) + areas) / 2.0 + np.spacing(1)  # (M,)
    e = d2 / var[None, :] / scale[:, None] / 2.0
    sim = np.exp(-e)
    if in_vis_thre is None:
        return sim.mean(axis=1)
    if b.shape[2] < 3:
        raise ValueError("oks_iou: in_vis_thre needs joint scores (K, 3)")
    used = b[:, :, 2] > in_vis_thre
    n = used.sum(axis=1)
    total = np.where(used, sim, 0.0).sum(axis=1)
    return np.where(n > 0, total / np.maximum(n, 1), 0.0)


def oks_nms(
    poses: Sequence[Mapping[str, Any]],
    threshold: float,
    sigmas: np.ndarray | Sequence[float] = COCO_SIGMAS,
    in_vis_thre: float | None = None,
) -> list[int]:
    """Greedy OKS non-maximum suppression; returns the indices kept, best score first.

    The top-down test crops one person per detector box, and the detector often yields several
    boxes on one person; their poses then nearly coincide. Greedily keeping the best-scored pose
    and dropping every other with OKS > ``threshold`` to it removes those duplicates (which would
    count as false positives) while keeping nearby but distinct people.

    Each pose is a mapping with ``keypoints`` (K, 3), ``score`` and ``area``. Ties in score put the
    later pose first, as HRNet's and MMPose's ``scores.argsort()[::-1]`` does with a stable sort (their
    published numbers; numpy's default sort may now order ties differently by CPU, so ours is stable
    explicitly). Ties are common: every ground-truth box scores 1, and which of two tied
    near-duplicates survives changes the AP.
    """
    if len(poses) == 0:
        return []
    scores = np.array([float(p["score"]) for p in poses])
    kpts = np.stack([np.asarray(p["keypoints"], dtype=np.float64).reshape(-1, 3) for p in poses])
    areas = np.array([float(p["area"]) for p in poses])
    order = np.argsort(scores, kind="stable")[::-1]
    keep: list[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        ovr = oks_iou(kpts[i], kpts[rest], areas[i], areas[rest], sigmas, in_vis_thre)
        order = rest[ovr <= threshold]
    return keep


def rescore_and_nms(
    predictions: Iterable[Mapping[str, Any]],
    *,
    in_vis_thre: float = 0.2,
    oks_thre: float = 0.9,
    sigmas: np.ndarray | Sequence[float] = COCO_SIGMAS,
    nms_in_vis_thre: float | None = None,
) -> list[dict]:
    """HRNet's COCO test post-processing: person rescoring, then per-image OKS-NMS.

    The detector's box score says nothing about how well the pose was found; multiplying it by
    the mean confidence of the joints the network is sure about (score > ``in_vis_thre``) ranks
    good poses first, which is what AP rewards. OKS-NMS at ``oks_thre`` (with all joints, as
    HRNet calls it; ``nms_in_vis_thre`` changes that) then removes duplicate poses per image.

    Each prediction has ``image_id``, ``keypoints`` (K, 3) with (x, y, joint score),
    ``box_score`` and ``area`` (the crop's scale-box area ``sw*200*sh*200``); other keys
    (``center``, ``scale``...) are carried along. Returns new dicts (inputs are not modified)
    with ``keypoints`` as a float array and ``score`` set, images in order of first appearance,
    each image's poses best first.
    """
    by_image: dict[Any, list[dict]] = {}
    for n, pred in enumerate(predictions):
        try:
            kpts = np.asarray(pred["keypoints"], dtype=np.float64).reshape(-1, 3)
            box_score = float(pred["box_score"])
            area = float(pred["area"])
            image_id = pred["image_id"]
        except KeyError as exc:
            raise PipelineError("predictions", f"entry {n}: missing field {exc}") from None
        except (TypeError, ValueError) as exc:
            raise PipelineError("predictions", f"entry {n}: {exc}") from None
        joint_scores = kpts[:, 2]
        confident = joint_scores[joint_scores > in_vis_thre]
        joint_mean = float(confident.mean()) if confident.size else 0.0
        item = dict(pred)
        item.update(keypoints=kpts, box_score=box_score, area=area, score=box_score * joint_mean)
        by_image.setdefault(image_id, []).append(item)

    kept: list[dict] = []
    for items in by_image.values():
        keep = oks_nms(items, oks_thre, sigmas, nms_in_vis_thre)
        kept.extend(items[i] for i in keep)
    return kept


# ----------------------------------------------------------------------------------------------
# Results files
# ----------------------------------------------------------------------------------------------
def _result_entry(pred: Mapping[str, Any], category_id: int) -> dict:
    kpts = np.asarray(pred["keypoints"], dtype=np.float64).reshape(-1, 3)
    flat: list[float] = []
    for x, y, s in kpts:
        # 1/1000 px is far below any OKS difference; keeps files small and diffable
        flat += [round(float(x), 3), round(float(y), 3), round(float(s), 5)]
    image_id = pred["image_id"]
    return {
        "image_id": int(image_id) if isinstance(image_id, (int, np.integer)) else image_id,
        "category_id": int(category_id),
        "keypoints": flat,
        # full precision: the person score only ranks, and rounding would create ties
        "score": float(pred["score"]),
    }


def write_results(predictions: Iterable[Mapping[str, Any]], path: str | Path, category_id: int = 1) -> None:
    """Write predictions (with ``score`` set) as a COCO keypoint results JSON, atomically.

    The format is the one pycocotools and the COCO test-dev server read: a list of
    ``{image_id, category_id, keypoints: [x1, y1, s1, ...], score}``.
    """
    entries = [_result_entry(p, category_id) for p in predictions]
    write_json(path, entries, indent=None)


# ----------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------
def load_gt(gt_json: str | Path, num_joints: int):
    """Read and check a COCO keypoint ground-truth file; return a pycocotools COCO object.

    pycocotools keeps one entry per id without a word, so repeated ids are refused before it indexes
    (:func:`pipeline.data.integrity.check_coco_ids`): a repeated annotation id would score people on
    the wrong images."""
    from pycocotools.coco import COCO

    where = str(gt_json)
    data = read_json(gt_json)
    if not isinstance(data, dict):
        raise PipelineError(where, "not a COCO annotation file (top level is not an object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise PipelineError(where, f"not a COCO annotation file (no '{key}' list)")
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or "id" not in img:
            raise PipelineError(where, f"images[{i}]: missing field 'id'")
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat:
            raise PipelineError(where, f"categories[{i}]: missing field 'id'")
    check_coco_ids(where, data, file_names=False)  # scoring reads no image: a file may serve two ids
    image_ids = {img["id"] for img in data["images"]}
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise PipelineError(where, f"annotations[{i}]: not an object")
        for field in _GT_ANN_FIELDS:
            if field not in ann:
                raise PipelineError(where, f"annotations[{i}]: missing field '{field}'")
        kp = ann["keypoints"]
        if not isinstance(kp, list) or len(kp) != 3 * num_joints:
            raise PipelineError(
                where, f"annotations[{i}]: 'keypoints' must be a list of {3 * num_joints} numbers"
            )
        if ann["image_id"] not in image_ids:
            raise PipelineError(where, f"annotations[{i}]: image_id {ann['image_id']!r} not in 'images'")
    coco = COCO()
    coco.dataset = data
    with quiet_stdout("COCO index"):
        coco.createIndex()
    return coco


def _check_results(results: list, where: str, image_ids: set, num_joints: int) -> list[dict]:
    """Validate result entries; return copies (pycocotools adds fields to them in place)."""
    out = []
    for i, r in enumerate(results):
        if not isinstance(r, dict):
            raise PipelineError(where, f"entry {i}: not an object")
        for field in ("image_id", "keypoints", "score"):
            if field not in r:
                raise PipelineError(where, f"entry {i}: missing field '{field}'")
        kp = r["keypoints"]
        try:
            kp = [float(v) for v in np.asarray(kp, dtype=np.float64).reshape(-1)]
        except (TypeError, ValueError):
            raise PipelineError(where, f"entry {i}: 'keypoints' is not a list of numbers") from None
        if len(kp) != 3 * num_joints:
            raise PipelineError(where, f"entry {i}: 'keypoints' has {len(kp)} values, expected {3 * num_joints}")
        if not all(math.isfinite(v) for v in kp):
            raise PipelineError(where, f"entry {i}: 'keypoints' has a non-finite value")
        try:
            score = float(r["score"])
        except (TypeError, ValueError):
            raise PipelineError(where, f"entry {i}: 'score' is not a number") from None
        if not math.isfinite(score):
            raise PipelineError(where, f"entry {i}: 'score' is not finite")
        if not isinstance(r["image_id"], (int, np.integer)) or isinstance(r["image_id"], bool):
            raise PipelineError(where, f"entry {i}: 'image_id' is not an integer")
        if r["image_id"] not in image_ids:
            raise PipelineError(where, f"entry {i}: image_id {r['image_id']!r} is not in the ground truth")
        out.append({"image_id": int(r["image_id"]), "category_id": r.get("category_id", 1), "keypoints": kp, "score": score})
    return out


@contextlib.contextmanager
def quiet_stdout(what: str):
    """pycocotools prints progress on stdout; keep stdout for our own output and log it."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        yield
    text = buf.getvalue().strip()
    if text:
        log.debug("%s:\n%s", what, text)


def load_results(results: str | Path | list, gt_ids: set, num_joints: int) -> list[dict]:
    """A COCO keypoint results file (or the list itself), checked against the ground truth's images:
    one reader for the scoring and for the bootstrap's per-image matching."""
    if isinstance(results, (str, Path)):
        where = str(results)
        raw = read_json(results)
        if not isinstance(raw, list):
            raise PipelineError(where, "not a COCO results file (top level is not a list)")
    else:
        where, raw = "results", list(results)
    return _check_results(raw, where, gt_ids, num_joints)


def evaluate_keypoints(
    gt_json: str | Path,
    results: str | Path | list,
    *,
    sigmas: np.ndarray | Sequence[float] | None = None,
    image_ids: Iterable[int] | None = None,
) -> dict[str, float]:
    """Score keypoint results against COCO ground truth with pycocotools' ``COCOeval``.

    Args:
        gt_json: COCO keypoint annotation file (e.g. ``person_keypoints_val2017.json``).
        results: a results JSON file or the list it would hold (see :func:`write_results`).
        sigmas: per-joint OKS sigmas; default the 17 COCO ones (what the paper's numbers use).
        image_ids: restrict scoring to these ground-truth images (a subset run); default all
            images of the ground truth, as HRNet scores val2017.

    Returns:
        ``AP, AP50, AP75, APM, APL, AR, AR50, AR75, ARM, ARL`` as floats in [0, 1]. Empty results
        give zeros. A statistic COCO cannot define (no ground-truth person in that area range:
        pycocotools' -1) is NaN.

    Raises:
        PipelineError: missing/corrupt ground truth or results (naming the file and entry), or
        results on images that are not in the ground truth.
    """
    from pycocotools.cocoeval import COCOeval

    sig = np.asarray(COCO_SIGMAS if sigmas is None else sigmas, dtype=np.float64)
    num_joints = sig.shape[0]
    gt = load_gt(gt_json, num_joints)
    gt_ids = set(gt.getImgIds())
    dts = load_results(results, gt_ids, num_joints)
    if not dts:
        log.warning("%s: no results; every metric is 0", results if isinstance(results, (str, Path)) else "results")
        return {k: 0.0 for k in STAT_NAMES}

    with quiet_stdout("COCOeval"):
        dt = gt.loadRes(dts)
        ev = COCOeval(gt, dt, "keypoints")
        ev.params.kpt_oks_sigmas = sig
        if image_ids is not None:
            ids = sorted(set(image_ids))
            unknown = [i for i in ids if i not in gt_ids]
            if unknown:
                raise PipelineError(str(gt_json), f"image ids not in the ground truth: {unknown[:5]}")
            ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(v) for v in ev.stats]
    return {k: (float("nan") if v < 0 else v) for k, v in zip(STAT_NAMES, stats)}


def evaluate_results_file(gt_json: str | Path, results_json: str | Path, **kwargs: Any) -> dict[str, float]:
    """Score a COCO keypoint results file (ours or anyone's) against a ground-truth file."""
    return evaluate_keypoints(gt_json, Path(results_json), **kwargs)


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipeline.metrics.coco GT.json RESULTS.json``: print the metrics as JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.metrics.coco",
        description="Score a COCO keypoint results file with pycocotools (AP, AR...).",
    )
    parser.add_argument("gt", help="COCO keypoint annotation JSON (e.g. person_keypoints_val2017.json)")
    parser.add_argument("results", help="COCO keypoint results JSON")
    args = parser.parse_args(argv)
    try:
        metrics = evaluate_results_file(args.gt, args.results)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    clean = {k: (None if math.isnan(v) else v) for k, v in metrics.items()}
    print(json.dumps(clean, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
