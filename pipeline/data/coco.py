"""COCO keypoint annotations and person detections -> top-down person records.

A record is a dict::

    image_path (str), image_id (int), center (2,) f64, scale (2,) f64,
    joints (17,2) f64 (0-based image pixels), vis (17,) f64 in {0,1},
    box_score (float; 1.0 for ground-truth boxes), area (float), ann_id (int; -1 for detections),
    box [x, y, w, h] (the cleaned ground-truth box or the detection box, before aspect and padding),
    image_size (width, height) of the image as the annotation file gives it (checked against the
    image's header before it is decoded, see :func:`pipeline.data.dataset.read_image`)

Ground-truth boxes (HRNet's loader): person annotations with ``iscrowd == 0`` and at least
one labelled keypoint (``v > 0``); the box is cleaned as HRNet does — ``x1 = max(0, x)``,
``x2 = min(W-1, x1 + max(0, w-1))`` (same for y; measured from the clipped ``x1``, as
HRNet does, so a box clipped on the left keeps its width) — and kept when ``area > min_area`` and
``x2 >= x1``, ``y2 >= y1``, and (beyond HRNet) when the annotated width and height are positive
(else the box would collapse to a point); the cleaned box is ``[x1, y1, x2-x1, y2-y1]``. ``vis = 1``
for ``v > 0`` (HRNet's training visibility). ``area`` is the annotation's area.

Detection boxes (testing): entries of ``det_file`` with ``category_id == 1`` and
``score >= image_thre`` (HRNet keeps scores equal to the threshold) and a positive width and
height; the box is used as is, joints are zero, ``area = w*h``. Detections on images absent from ``ann_file`` are
skipped (so a subset annotation file selects a subset of images), counted in one warning; a detection file
none of whose person detections lies on an image of ``ann_file`` belongs to another split and is refused.

Every problem with an input file is a :class:`PipelineError` naming the file (and the
annotation id or entry index). The ids the readers key on (image ids, file names, annotation ids) must
be unique (:func:`pipeline.data.integrity.check_coco_ids`), checked when a file is read.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PipelineError
from ..io import read_json
from .integrity import check_coco_ids
from .transforms import PIXEL_STD, box_to_center_scale

NUM_JOINTS = 17

log = logging.getLogger(__name__)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _numbers(v: Any, n: int) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == n and all(_is_number(x) for x in v)


def _read_coco(path: str | Path) -> dict:
    """A COCO annotation or image-info file whose ids are unique (see :mod:`.integrity`)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise PipelineError(str(path), "expected a COCO JSON object with an 'images' list")
    images = data.get("images")
    if not isinstance(images, list):
        raise PipelineError(str(path), "missing or malformed 'images' list")
    check_coco_ids(str(path), data)
    return data


def _image_table(path: str | Path, data: dict) -> dict[int, dict]:
    table: dict[int, dict] = {}
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict):
            raise PipelineError(str(path), f"images[{i}] is not an object")
        iid = img.get("id")
        if not isinstance(iid, int) or isinstance(iid, bool):
            raise PipelineError(str(path), f"images[{i}]: 'id' must be an integer")
        if not isinstance(img.get("file_name"), str):
            raise PipelineError(str(path), f"image id {iid}: 'file_name' must be a string")
        for key in ("width", "height"):
            if not _is_number(img.get(key)) or img[key] <= 0:
                raise PipelineError(str(path), f"image id {iid}: '{key}' must be a positive number")
        table[iid] = img
    return table


def load_image_ids(ann_or_info_file: str | Path) -> list[int]:
    """Sorted image ids of a COCO annotation or image-info file."""
    path = Path(ann_or_info_file)
    return sorted(_image_table(path, _read_coco(path)))


def _clipped_box(bbox: list, width: float, height: float, area: float, min_area: float
                 ) -> tuple[float, float, float, float] | None:
    """``(x1, y1, x2, y2)`` of a ground-truth box clipped to the image as HRNet clips it, or ``None``
    for a box HRNet drops (area not above ``min_area``) or one without positive size in the image."""
    x, y, w, h = (float(v) for v in bbox)
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
    y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
    # HRNet's test, plus a box of positive size: a negative or zero width/height would be clamped
    # to a point (crop scale [0, 0]); a box wholly outside the image fails x2 >= x1 / y2 >= y1
    if not (area > min_area and w > 0 and h > 0 and x2 >= x1 and y2 >= y1):
        return None
    return x1, y1, x2, y2


def _gt_records(
    path: Path, data: dict, images: dict[int, dict], image_dir: Path,
    aspect_ratio: float, min_area: float, pixel_std: float, padding: float,
) -> list[dict]:
    anns = data.get("annotations")
    if not isinstance(anns, list):
        raise PipelineError(str(path), "missing or malformed 'annotations' list (needed for ground-truth boxes)")
    records: list[dict] = []
    dropped: list[Any] = []
    nk = 3 * NUM_JOINTS
    for i, ann in enumerate(anns):
        if not isinstance(ann, dict):
            raise PipelineError(str(path), f"annotations[{i}] is not an object")
        aid = ann.get("id", f"#{i}")
        if ann.get("category_id", 1) != 1 or ann.get("iscrowd", 0):
            continue
        iid = ann.get("image_id")
        if iid not in images:
            raise PipelineError(str(path), f"annotation id {aid}: image_id {iid!r} is not in 'images'")
        kps = ann.get("keypoints")
        if not _numbers(kps, nk):
            got = f"{len(kps)} values" if isinstance(kps, list) else type(kps).__name__
            raise PipelineError(str(path), f"annotation id {aid}: 'keypoints' must be {nk} numbers (got {got})")
        bbox = ann.get("bbox")
        if not _numbers(bbox, 4):
            raise PipelineError(str(path), f"annotation id {aid}: 'bbox' must be 4 numbers")
        area = ann.get("area", bbox[2] * bbox[3])
        if not _is_number(area):
            raise PipelineError(str(path), f"annotation id {aid}: 'area' must be a number")
        kp = np.asarray(kps, dtype=np.float64).reshape(NUM_JOINTS, 3)
        vis = (kp[:, 2] > 0).astype(np.float64)
        if vis.sum() == 0:
            continue
        img = images[iid]
        width, height = float(img["width"]), float(img["height"])
        box = _clipped_box(bbox, width, height, float(area), min_area)
        if box is None:
            dropped.append(aid)
            continue
        x1, y1, x2, y2 = box
        center, scale = box_to_center_scale(
            [x1, y1, x2 - x1, y2 - y1], aspect_ratio, pixel_std=pixel_std, padding=padding)
        records.append({
            "image_path": str(image_dir / img["file_name"]),
            "image_id": int(iid),
            "center": center,
            "scale": scale,
            "joints": kp[:, :2] * vis[:, None],
            "vis": vis,
            "box_score": 1.0,
            "area": float(area),
            "ann_id": int(aid) if isinstance(aid, int) else -1,
            "box": [x1, y1, x2 - x1, y2 - y1],
            "image_size": (width, height),
        })
    _log_dropped(path, "ground-truth person boxes", dropped, "annotation ids")
    return records


def _log_dropped(path: Path, what: str, dropped: list[Any], label: str) -> None:
    """One warning line counting the invalid boxes of a file that were left out (and the first ids)."""
    if dropped:
        shown = ", ".join(str(d) for d in dropped[:5]) + (", ..." if len(dropped) > 5 else "")
        log.warning("%s: dropped %d %s with an invalid box (zero or negative size, or outside the image; "
                    "%s %s)", path, len(dropped), what, label, shown)


def _det_records(
    det_file: Path, ann_file: Path, images: dict[int, dict], image_dir: Path, image_thre: float,
    aspect_ratio: float, pixel_std: float, padding: float,
) -> list[dict]:
    dets = read_json(det_file)
    if not isinstance(dets, list):
        raise PipelineError(str(det_file), "expected a JSON list of detections")
    records: list[dict] = []
    dropped: list[int] = []
    person_images: list[int] = []  # the image of every person detection, for _check_det_images
    for i, det in enumerate(dets):
        if not isinstance(det, dict):
            raise PipelineError(str(det_file), f"detection #{i} is not an object")
        if det.get("category_id", 1) != 1:
            continue
        iid = det.get("image_id")
        if not isinstance(iid, int) or isinstance(iid, bool):
            raise PipelineError(str(det_file), f"detection #{i}: 'image_id' must be an integer")
        bbox, score = det.get("bbox"), det.get("score")
        if not _numbers(bbox, 4):
            raise PipelineError(str(det_file), f"detection #{i} (image {iid}): 'bbox' must be 4 numbers")
        if not _is_number(score):
            raise PipelineError(str(det_file), f"detection #{i} (image {iid}): 'score' must be a number")
        person_images.append(iid)
        if score < image_thre or iid not in images:
            continue
        if not (bbox[2] > 0 and bbox[3] > 0):  # zero size: NaN keypoints and a singular affine
            dropped.append(i)
            continue
        center, scale = box_to_center_scale(bbox, aspect_ratio, pixel_std=pixel_std, padding=padding)
        records.append({
            "image_path": str(image_dir / images[iid]["file_name"]),
            "image_id": iid,
            "center": center,
            "scale": scale,
            "joints": np.zeros((NUM_JOINTS, 2)),
            "vis": np.zeros(NUM_JOINTS),
            "box_score": float(score),
            "area": float(bbox[2]) * float(bbox[3]),
            "ann_id": -1,
            "box": [float(v) for v in bbox],
            "image_size": (float(images[iid]["width"]), float(images[iid]["height"])),
        })
    _log_dropped(det_file, "person detections", dropped, "entries #")
    _check_det_images(det_file, ann_file, person_images, images)
    return records


def _check_det_images(det_file: Path, ann_file: Path, det_images: list[int], images: dict[int, dict]) -> None:
    """Detections must lie on images of the annotation file. None of them on one: the file belongs to
    another split (val's detections read with test-dev's image list), refused; some of them: skipped
    (a subset annotation file selects a subset of images), with one warning counting them."""
    unknown = [iid for iid in det_images if iid not in images]
    if not unknown:
        return
    if len(unknown) == len(det_images):
        raise PipelineError(str(det_file), f"none of its {len(det_images)} person detections lies on an image "
                                           f"of {ann_file.name} (the first is on image id {unknown[0]}): "
                                           "the detection file belongs to another split; check the file")
    ids = sorted(set(unknown))
    shown = ", ".join(str(i) for i in ids[:5]) + (", ..." if len(ids) > 5 else "")
    log.warning("%s: skipped %d person detections on %d images that %s does not list (image ids %s)",
                det_file, len(unknown), len(ids), ann_file.name, shown)


def load_coco_people(
    ann_file: str | Path,
    image_dir: str | Path,
    *,
    aspect_ratio: float,
    use_gt_boxes: bool = True,
    det_file: str | Path | None = None,
    image_thre: float = 0.0,
    min_area: float = 0.0,
    pixel_std: float = PIXEL_STD,
    padding: float = 1.25,
) -> list[dict]:
    """Person records from ground-truth boxes (``use_gt_boxes``) or from ``det_file``.

    ``ann_file`` may be an image-info file (e.g. test-dev) when detections are used.
    ``aspect_ratio`` is the network input's width / height.
    """
    path = Path(ann_file)
    data = _read_coco(path)
    images = _image_table(path, data)
    image_dir = Path(image_dir)
    if use_gt_boxes:
        return _gt_records(path, data, images, image_dir, aspect_ratio, min_area, pixel_std, padding)
    if det_file is None:
        raise PipelineError("det_file", "detection boxes requested (use_gt_boxes=False) but no det_file given")
    return _det_records(Path(det_file), path, images, image_dir, image_thre, aspect_ratio, pixel_std, padding)
