"""The synthetic MPII dataset in HRNet's converted layout: images, annot/*.json, gt_valid.mat."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from ...io import atomic_path
from ...progress import track
from . import files
from .anatomy import POINT_INDEX
from .arguments import check_args
from .files import dump_json, round2
from .person import Person
from .scene import render_scene
from .seeding import image_rng
from .style import MPII_STYLE, Style, with_difficulty

_MPII_SPLITS = (("train", 1), ("valid", 100_000))

# Names the real gt_valid.mat uses for dataset_joints, in MPII order.
_MAT_JOINT_NAMES = ("rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor",
                    "neck", "head", "rwri", "relb", "rsho", "lsho", "lelb", "lwri")


@dataclass
class _MpiiRecord:
    """One annotated MPII person: the JSON entry and the gt_valid.mat columns."""

    entry: dict
    missing: np.ndarray     # (16,) 1 = unlabelled
    headbox0: np.ndarray    # (2, 2) [[x1, y1], [x2, y2]], 0-based


def _mpii_record(rng: np.random.Generator, person: Person, image_name: str) -> _MpiiRecord | None:
    """MPII entry for a figure with at least 4 labelled joints (MPII skips barely-visible people)."""
    labelled = person.mpii[:, 2] > 0
    if labelled.sum() < 4:
        return None
    xy0 = person.mpii[:, :2]
    joints = [[round2(x + 1), round2(y + 1)] if ok else [-1.0, -1.0] for (x, y), ok in zip(xy0, labelled)]
    thorax, pelvis = person.px[POINT_INDEX["thorax"]], person.px[POINT_INDEX["pelvis"]]
    centre = (thorax + pelvis) / 2 + rng.normal(0, 0.03 * person.height, 2)
    scale = person.height / 200.0 * float(np.exp(rng.normal(0, 0.03)))
    top, neck = person.px[POINT_INDEX["head_top"]], person.px[POINT_INDEX["upper_neck"]]
    mid = (top + neck) / 2
    half = 0.5 * _head_length(person)
    headbox = np.array([mid - half, mid + half])
    entry = {"image": image_name, "center": [round2(centre[0] + 1), round2(centre[1] + 1)], "scale": round(scale, 4),
             "joints": joints, "joints_vis": [int(v) for v in labelled]}
    return _MpiiRecord(entry, (~labelled).astype(np.float64), headbox)


def _head_length(person: Person) -> float:
    """Upper-neck to head-top length in pixels, before projection shortens it (MPII head size)."""
    return 1.9 * 0.066 * person.height


def _render_mpii_split(root: Path, seed: int, split: str, base: int, n: int, width: int, height: int,
                       max_people: int, progress: bool, style: Style = MPII_STYLE) -> list[_MpiiRecord]:
    records: list[_MpiiRecord] = []
    for i in track(range(n), f"synthetic mpii {split}", unit="image", enabled=progress):
        rng = image_rng(seed, "mpii", split, i)
        img, people = render_scene(rng, width, height, max_people, style)
        name = f"{base + i:09d}.jpg"
        files.write_jpeg(root / "images" / name, img)
        for person in people:
            rec = _mpii_record(rng, person, name)
            if rec is not None:
                records.append(rec)
    return records


def _write_gt_mat(path: Path, records: list[_MpiiRecord]) -> None:
    """gt_valid.mat with the real file's variables, shapes and 1-based coordinates."""
    n = len(records)
    names = np.empty((1, len(_MAT_JOINT_NAMES)), dtype=object)
    for i, name in enumerate(_MAT_JOINT_NAMES):
        names[0, i] = name
    pos = np.zeros((16, 2, n))
    missing = np.zeros((16, n))
    heads = np.zeros((2, 2, n))
    for k, rec in enumerate(records):
        pos[:, :, k] = np.array(rec.entry["joints"], dtype=np.float64)
        missing[:, k] = rec.missing
        heads[:, :, k] = rec.headbox0 + 1.0
    scipy.io.savemat(str(path), {"dataset_joints": names, "jnt_missing": missing, "pos_gt_src": pos,
                                 "headboxes_src": heads}, do_compression=False)


def generate_mpii(out_dir: Path, *, seed: int, image_size: tuple[int, int], train_images: int, val_images: int,
                  max_people: int, difficulty: float = 1.0, progress: bool = True) -> dict:
    """Write a synthetic MPII dataset (HRNet's converted layout) under ``out_dir``, atomically.

    Returns summary counts per split (images, people, labelled joints).
    """
    counts = {"train_images": train_images, "val_images": val_images}
    width, height = check_args("generate_mpii", image_size, counts, max_people, difficulty)
    sizes = {"train": int(train_images), "valid": int(val_images)}
    summary: dict = {}
    with atomic_path(out_dir) as root:
        (root / "images").mkdir(parents=True)
        (root / "annot").mkdir()
        for split, base in _MPII_SPLITS:
            records = _render_mpii_split(root, seed, split, base, sizes[split], width, height,
                                         int(max_people), progress, with_difficulty(MPII_STYLE, difficulty))
            dump_json(root / "annot" / f"{split}.json", [r.entry for r in records])
            if split == "valid":
                _write_gt_mat(root / "annot" / "gt_valid.mat", records)
            summary[split] = {"images": sizes[split], "people": len(records),
                              "labelled_joints": int(sum(sum(r.entry["joints_vis"]) for r in records))}
    return summary
