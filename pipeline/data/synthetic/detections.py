"""Person detections for val and test-dev: an imperfect detector simulated from the ground truth.

Why: COCO's top-down protocol scores pose models on a detector's boxes, not on ground-truth
boxes, so the synthetic data ships detection files in the real ones' format."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .draws import uniform
from .files import round2


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _jitter_box(rng: np.random.Generator, box: Sequence[float], width: int, height: int,
                level: float) -> list[float]:
    x, y, w, h = box
    cx, cy = x + w / 2 + rng.normal(0, level) * w, y + h / 2 + rng.normal(0, level) * h
    w, h = w * math.exp(rng.normal(0, level)), h * math.exp(rng.normal(0, level))
    x0, y0 = max(0.0, cx - w / 2), max(0.0, cy - h / 2)
    x1, y1 = min(float(width), cx + w / 2), min(float(height), cy + h / 2)
    return [round2(x0), round2(y0), round2(max(1.0, x1 - x0)), round2(max(1.0, y1 - y0))]


def _score(rng: np.random.Generator, quality: float) -> float:
    return round(float(np.clip(0.3 + 0.75 * quality ** 2 + rng.normal(0, 0.06), 0.301, 1.0)), 3)


def simulated_detections(rng: np.random.Generator, images: list[dict], anns: list[dict]) -> list[dict]:
    """An imperfect person detector: jittered GT boxes, misses, duplicates, false positives."""
    by_image: dict[int, list[dict]] = {}
    for a in anns:
        by_image.setdefault(a["image_id"], []).append(a)
    dets: list[dict] = []
    for img in images:
        iid, width, height = img["id"], img["width"], img["height"]
        for a in by_image.get(iid, []):
            miss = 0.04 + (0.2 if a["num_keypoints"] == 0 else 0.0) + (0.1 if a["area"] < 150 else 0.0)
            if rng.random() < miss:
                continue
            # Localisation noise of a good detector: HRNet loses only 1-2 AP on COCO val between
            # ground-truth boxes and its detections (AP 56.4 detector), so boxes are close.
            box = _jitter_box(rng, a["bbox"], width, height, uniform(rng, 0.02, 0.06))
            score = _score(rng, _iou(box, a["bbox"]))
            dets.append({"image_id": iid, "category_id": 1, "bbox": box, "score": score})
            if rng.random() < 0.08:
                dup = _jitter_box(rng, a["bbox"], width, height, uniform(rng, 0.06, 0.15))
                dets.append({"image_id": iid, "category_id": 1, "bbox": dup,
                             "score": round(max(0.301, score * uniform(rng, 0.4, 0.8)), 3)})
        for _ in range(int(rng.poisson(0.4))):
            bh = height * uniform(rng, 0.15, 0.6)
            bw = bh * uniform(rng, 0.3, 0.8)
            box = [round2(uniform(rng, 0, max(1.0, width - bw))), round2(uniform(rng, 0, max(1.0, height - bh))),
                   round2(bw), round2(bh)]
            dets.append({"image_id": iid, "category_id": 1, "bbox": box, "score": round(uniform(rng, 0.301, 0.6), 3)})
    return dets
