"""The ``tune`` split: images of the training split held out for choosing hyperparameters.

Why: a hyperparameter chosen by the validation score is fitted to the split that then reports the
result. Carving the tuning split out of the *training* data keeps val (and test-dev) out of every
choice; a run with ``split: tune`` trains on train ∖ tune and is scored on tune only.

The draw is by image, so every person of an image lands on the same side (crops of one image share
background, lighting and often the same people, and would otherwise leak between the sides). It is
a seeded hash, not an RNG stream: each image key (COCO: the image id; MPII: the image file name) is
ranked by ``sha256("<seed>/<key>")`` and the first ``round(fraction × images)`` keys of that ranking
(at least one image, and at least one image left to train on) form the tune split. The result depends
on nothing but the keys, the fraction and the seed: the same on every machine, under every NumPy
version, and an image's side does not depend on the order of the annotation file.

The ground truth of the tune images is written in the forms the metrics read: a COCO keypoint
annotation file (the train file's images, annotations and categories restricted to tune images, so
pycocotools scores tune exactly as it scores val) and for MPII the tune entries of ``train.json`` with a
``gt_valid.mat``-shaped file. HRNet's MPII ``train.json`` has no head boxes, so the tune head box is
the square whose side is the annotated upper-neck → head-top segment (PCKh head size
``0.6 · √2 · side``); people without both joints labelled count as fully missing (no joint is scored).
Tune PCKh therefore ranks settings but is not on the same scale as val PCKh.
"""
from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from .. import io
from ..errors import PipelineError
from .integrity import check_coco_ids, check_mpii_people

#: MPII joints that define the tune head box (MPII order: 8 upper neck, 9 head top).
MPII_NECK, MPII_HEAD_TOP = 8, 9
MPII_JOINT_NAMES = ("rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor",
                    "neck", "head", "rwri", "relb", "rsho", "lsho", "lelb", "lwri")


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{int(seed)}/{key}".encode()).hexdigest()


def tune_count(n_images: int, fraction: float) -> int:
    """How many of ``n_images`` go to tune: ``round(fraction · n)``, at least 1, at most ``n - 1``."""
    if n_images < 2:
        raise PipelineError("tune", f"{n_images} training image(s): a tune split needs at least 2")
    return min(max(int(round(fraction * n_images)), 1), n_images - 1)


def tune_keys(keys: Iterable[Any], fraction: float, seed: int) -> set[str]:
    """The image keys (as strings) of the tune split among ``keys`` (duplicates count once)."""
    unique = sorted({str(k) for k in keys})
    n = tune_count(len(unique), fraction)
    return set(sorted(unique, key=lambda k: (_rank(seed, k), k))[:n])


# ----------------------------------------------------------------------------------------------- COCO
def coco_tune_subset(train: dict[str, Any], fraction: float, seed: int) -> dict[str, Any]:
    """The COCO annotation file of the tune images: every key of ``train`` kept, ``images`` and
    ``annotations`` (crowd regions included: pycocotools ignores detections on them) restricted."""
    images = train.get("images")
    anns = train.get("annotations")
    if not isinstance(images, list) or not isinstance(anns, list):
        raise PipelineError("tune", "the train annotation file needs 'images' and 'annotations' lists")
    keys = tune_keys((img["id"] for img in images), fraction, seed)
    out = {k: copy.deepcopy(v) for k, v in train.items() if k not in ("images", "annotations")}
    out["images"] = [img for img in images if str(img["id"]) in keys]
    out["annotations"] = [a for a in anns if str(a.get("image_id")) in keys]
    return out


def write_coco_tune(train_file: Path, out_file: Path, fraction: float, seed: int) -> Path:
    """Write (atomically, once) the tune images' annotation file; deterministic, so writers that race
    write the same bytes. A repeated id in the train file is refused naming that file, before any of
    it is copied into the tune ground truth."""
    if not out_file.is_file():
        train = io.read_json(train_file)
        check_coco_ids(str(train_file), train)
        io.write_json(out_file, coco_tune_subset(train, fraction, seed), indent=None)
    return out_file


# ----------------------------------------------------------------------------------------------- MPII
def mpii_tune_entries(entries: list[dict[str, Any]], fraction: float, seed: int) -> list[dict[str, Any]]:
    """The entries of MPII ``train.json`` whose image is in the tune split, in file order."""
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "image" in e for e in entries):
        raise PipelineError("tune", "MPII train.json must be a list of entries with an 'image'")
    keys = tune_keys((e["image"] for e in entries), fraction, seed)
    return [e for e in entries if e["image"] in keys]


def mpii_tune_gt(entries: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """``gt_valid.mat``'s arrays for tune entries (1-based, as the file): joints, missing flags from
    ``joints_vis``, head boxes from the neck → head-top segment (see the module docstring)."""
    n = len(entries)
    pos = np.zeros((16, 2, n))
    missing = np.ones((16, n))
    heads = np.zeros((2, 2, n))
    heads[1] += 1.0  # a unit box where no head size exists (every joint of that person is missing)
    for k, e in enumerate(entries):
        joints = np.asarray(e["joints"], dtype=np.float64)
        vis = np.asarray(e["joints_vis"], dtype=np.float64) > 0
        pos[:, :, k] = joints
        side = float(np.linalg.norm(joints[MPII_HEAD_TOP] - joints[MPII_NECK]))
        if vis[MPII_HEAD_TOP] and vis[MPII_NECK] and side > 0:
            mid = (joints[MPII_HEAD_TOP] + joints[MPII_NECK]) / 2
            heads[:, :, k] = [mid - side / 2, mid + side / 2]
            missing[:, k] = (~vis).astype(np.float64)
    return {"jnt_missing": missing, "pos_gt_src": pos, "headboxes_src": heads}


def write_mpii_tune(train_file: Path, out_json: Path, out_mat: Path, fraction: float, seed: int) -> None:
    """Write (atomically, once) the tune entries and their ``gt_valid.mat``-shaped ground truth."""
    if out_json.is_file() and out_mat.is_file():
        return
    train = io.read_json(train_file)
    check_mpii_people(str(train_file), train)  # before a person listed twice is scored twice on tune
    entries = mpii_tune_entries(train, fraction, seed)
    gt = mpii_tune_gt(entries)
    names = np.empty((1, len(MPII_JOINT_NAMES)), dtype=object)
    names[0, :] = MPII_JOINT_NAMES
    with io.atomic_path(out_mat) as tmp:
        scipy.io.savemat(str(tmp), {"dataset_joints": names, **gt}, do_compression=False)
    io.write_json(out_json, entries, indent=None)
