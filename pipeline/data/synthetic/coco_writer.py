"""The synthetic COCO dataset in HRNet's layout: images, person_keypoints_*.json, detections."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ...io import atomic_path
from ...progress import track
from ..skeleton import COCO
from . import files
from .arguments import check_args
from .detections import simulated_detections
from .files import dump_json, round2
from .person import Person
from .scene import render_scene
from .seeding import detections_rng, image_rng
from .style import COCO_STYLE, Style, with_difficulty

_COCO_SPLITS = (("train2017", 1), ("val2017", 100_000), ("test2017", 200_000))


def _coco_annotation(person: Person, image_id: int, ann_id: int) -> dict | None:
    """COCO annotation from the figure's amodal mask (None when nothing of it is in frame)."""
    pts = cv2.findNonZero((person.mask > 0).astype(np.uint8))
    if pts is None:
        return None
    x, y, w, h = cv2.boundingRect(pts)
    hull = cv2.convexHull(pts).reshape(-1, 2)
    if len(hull) < 3:
        hull = np.array([[x, y], [x + w - 1, y], [x + w - 1, y + h - 1], [x, y + h - 1]])
    kps = person.coco
    flat: list[float] = []
    for xk, yk, v in kps:
        flat.extend([round2(xk), round2(yk), int(v)] if v > 0 else [0, 0, 0])
    return {
        "id": ann_id, "image_id": image_id, "category_id": 1,
        "keypoints": flat, "num_keypoints": int((kps[:, 2] > 0).sum()),
        "bbox": [float(x), float(y), float(w), float(h)], "area": float(len(pts)), "iscrowd": 0,
        "segmentation": [[float(c) for c in hull.reshape(-1)]],
    }


def _coco_categories() -> list[dict]:
    return [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(COCO.joints),
             "skeleton": [[a + 1, b + 1] for a, b in COCO.bones]}]


def _coco_header(split: str) -> dict:
    return {
        "info": {"description": f"Synthetic COCO-format person keypoints ({split})", "version": "1.0",
                 "year": 2017, "contributor": "pipeline.data.synthetic", "date_created": "2017-01-01"},
        "licenses": [{"id": 1, "name": "synthetic", "url": ""}],
    }


def _render_coco_split(root: Path, seed: int, split: str, base: int, n: int, width: int, height: int,
                       max_people: int, progress: bool, style: Style = COCO_STYLE
                       ) -> tuple[list[dict], list[dict]]:
    image_dir = root / "images" / split
    image_dir.mkdir(parents=True)
    images, anns = [], []
    for i in track(range(n), f"synthetic coco {split}", unit="image", enabled=progress):
        rng = image_rng(seed, "coco", split, i)
        img, people = render_scene(rng, width, height, max_people, style)
        image_id = base + i
        name = f"{image_id:012d}.jpg"
        files.write_jpeg(image_dir / name, img)
        images.append({"id": image_id, "file_name": name, "width": width, "height": height, "license": 1})
        for k, person in enumerate(people):
            ann = _coco_annotation(person, image_id, image_id * 100 + k + 1)
            if ann is not None:
                anns.append(ann)
    return images, anns


def _split_summary(images: list[dict], anns: list[dict]) -> dict:
    return {"images": len(images), "people": len(anns),
            "labelled_keypoints": int(sum(a["num_keypoints"] for a in anns)),
            "occluded_keypoints": int(sum(a["keypoints"][2::3].count(1) for a in anns))}


def _write_annotations(root: Path, splits: dict[str, tuple[list[dict], list[dict]]]) -> None:
    """person_keypoints_*.json per split, and test-dev's image list without annotations."""
    for split, ann_name in (("train2017", "person_keypoints_train2017.json"),
                            ("val2017", "person_keypoints_val2017.json"),
                            ("test2017", "person_keypoints_test-dev2017.json")):
        images, anns = splits[split]
        dump_json(root / "annotations" / ann_name, {**_coco_header(split), "images": images,
                                                     "annotations": anns, "categories": _coco_categories()})
    test_images_list = splits["test2017"][0]
    dump_json(root / "annotations" / "image_info_test-dev2017.json",
               {**_coco_header("test-dev2017"), "images": test_images_list, "categories": _coco_categories()})


def _write_detections(root: Path, seed: int, splits: dict[str, tuple[list[dict], list[dict]]]) -> dict[str, int]:
    """Detection files for val and test-dev, named as HRNet's; returns the count per split."""
    counts: dict[str, int] = {}
    for split, det_name in (("val2017", "COCO_val2017_detections_AP_H_56_person.json"),
                            ("test2017", "COCO_test-dev2017_detections_AP_H_609_person.json")):
        dets = simulated_detections(detections_rng(seed, split), *splits[split])
        dump_json(root / "person_detection_results" / det_name, dets)
        counts[split] = len(dets)
    return counts


def generate_coco(out_dir: Path, *, seed: int, image_size: tuple[int, int], train_images: int, val_images: int,
                  test_images: int, max_people: int, difficulty: float = 1.0, progress: bool = True) -> dict:
    """Write a synthetic COCO person-keypoints dataset (HRNet layout) under ``out_dir``, atomically.

    Returns summary counts per split (images, people, labelled and occluded keypoints) and the
    number of detections written for val and test-dev.
    """
    counts = {"train_images": train_images, "val_images": val_images, "test_images": test_images}
    width, height = check_args("generate_coco", image_size, counts, max_people, difficulty)
    sizes = {"train2017": train_images, "val2017": val_images, "test2017": test_images}
    summary: dict = {}
    with atomic_path(out_dir) as root:
        (root / "annotations").mkdir(parents=True)
        (root / "person_detection_results").mkdir()
        splits = {}
        for split, base in _COCO_SPLITS:
            splits[split] = _render_coco_split(root, seed, split, base, int(sizes[split]), width, height,
                                               int(max_people), progress, with_difficulty(COCO_STYLE, difficulty))
            summary[split] = _split_summary(*splits[split])
        _write_annotations(root, splits)
        summary["detections"] = _write_detections(root, seed, splits)
    return summary
