"""MPII (HRNet's converted JSON) -> top-down person records.

Each entry of ``annot/{train,valid}.json`` has ``image``, ``center`` (1-based), ``scale``
(person height / 200), ``joints`` (16 x [x, y], 1-based) and ``joints_vis`` (16 x 0/1).
As HRNet: if ``center[0] != -1``, ``center[1] += 15 * scale`` and ``scale *= 1.25``; then
centre and joints are converted to 0-based (``- 1``). The box is square, ``(s, s)``; when
the input aspect ratio ``w/h`` differs from 1 it is enlarged to that ratio (``s_w = s*a``
for ``a > 1``, ``s_h = s/a`` for ``a < 1``), never shrunk.

Records have the same shape as COCO's (see :mod:`pipeline.data.coco`) with 16 joints;
``image_id`` is the numeric stem of the image name (``015601864.jpg`` -> 15601864), or
the entry index when the stem is not a number; ``area = (sw*200) * (sh*200)``;
``entry_index`` is the entry's position in the file. Entries without ``joints`` (a test file)
get zero joints and visibilities.

HRNet's json has no ids and no image sizes: a person listed twice (same image, centre and scale) and two
image names that get one image id are refused (:mod:`.integrity`); images are held to the pixel limit
only (:mod:`.image_header`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PipelineError
from ..io import read_json
from .integrity import check_mpii_image_ids, check_mpii_people
from .transforms import PIXEL_STD

NUM_JOINTS = 16


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _entry_joints(path: Path, a: dict, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``(joints (K,2) 0-based, visibility (K,))`` of one entry; an entry without joints (a test-set
    person) gets zeros, invisible, so that the same record shape serves both splits."""
    if "joints" not in a:
        return np.zeros((NUM_JOINTS, 2)), np.zeros(NUM_JOINTS)
    joints = a["joints"]
    ok = (isinstance(joints, list) and len(joints) == NUM_JOINTS and all(
        isinstance(p, list) and len(p) == 2 and all(_is_number(v) for v in p) for p in joints))
    if not ok:
        raise PipelineError(str(path), f"{where}: 'joints' must be {NUM_JOINTS} [x, y] pairs")
    jv = a.get("joints_vis")
    if not (isinstance(jv, list) and len(jv) == NUM_JOINTS and all(_is_number(v) for v in jv)):
        raise PipelineError(str(path), f"{where}: 'joints_vis' must be {NUM_JOINTS} numbers")
    j = np.asarray(joints, dtype=np.float64) - 1.0
    vis = (np.asarray(jv, dtype=np.float64) > 0).astype(np.float64)
    return j, vis


def _person_box(center: list, s: float, aspect_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """``(centre, scale)`` of the crop, 0-based, as HRNet's MPII reader makes it: MPII's person centre
    lies near the hips, so it moves up by 15 scale units and the scale grows by 1.25 (unless the
    centre is the -1 placeholder); the scale then widens to the model's aspect ratio."""
    c = np.asarray(center, dtype=np.float64)
    s = float(s)
    if c[0] != -1:
        c[1] += 15.0 * s
        s *= 1.25
    c = c - 1.0
    scale = np.array([s, s], dtype=np.float64)
    if aspect_ratio > 1.0:
        scale[0] = s * aspect_ratio
    elif aspect_ratio < 1.0:
        scale[1] = s / aspect_ratio
    return c, scale


def load_mpii_people(
    json_file: str | Path,
    image_dir: str | Path,
    *,
    aspect_ratio: float = 1.0,
    pixel_std: float = PIXEL_STD,
) -> list[dict]:
    """Person records from an MPII JSON annotation file (see the module docstring)."""
    path = Path(json_file)
    data = read_json(path)
    if not isinstance(data, list):
        raise PipelineError(str(path), "expected a JSON list of MPII person entries")
    image_dir = Path(image_dir)
    records: list[dict] = []
    for i, a in enumerate(data):
        if not isinstance(a, dict):
            raise PipelineError(str(path), f"entry {i} is not an object")
        name = a.get("image")
        if not isinstance(name, str) or not name:
            raise PipelineError(str(path), f"entry {i}: 'image' must be a file name")
        where = f"entry {i} ({name})"
        center = a.get("center")
        if not (isinstance(center, list) and len(center) == 2 and all(_is_number(v) for v in center)):
            raise PipelineError(str(path), f"{where}: 'center' must be 2 numbers")
        s = a.get("scale")
        if not _is_number(s) or s <= 0:
            raise PipelineError(str(path), f"{where}: 'scale' must be a positive number")
        j, vis = _entry_joints(path, a, where)
        c, scale = _person_box(center, s, aspect_ratio)

        stem = Path(name).stem
        records.append({
            "image_path": str(image_dir / name),
            "image_id": int(stem) if stem.isdigit() else i,
            "center": c,
            "scale": scale,
            "joints": j * vis[:, None],
            "vis": vis,
            "box_score": 1.0,
            "area": float(scale[0] * scale[1] * pixel_std * pixel_std),
            "entry_index": i,
        })
    check_mpii_people(str(path), data)
    check_mpii_image_ids(str(path), ((data[r["entry_index"]]["image"], r["image_id"]) for r in records))
    return records
