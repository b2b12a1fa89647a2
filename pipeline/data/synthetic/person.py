"""One figure placed in the frame: posed, turned, rolled, scaled, projected (maybe truncated)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .appearance import _Part, _figure_parts, _sample_palette
from .body import _build_body, _facing, _ry
from .draws import _u
from .pose import _sample_build, _sample_pose, _sample_view
from .style import _Style


@dataclass
class _Person:
    """A rendered figure and everything the annotation writers need about it."""

    px: np.ndarray              # (len(_POINTS), 2) image coordinates
    depth: np.ndarray           # (len(_POINTS),) camera depth (towards the camera), units of height
    facing: dict[str, float]
    height: float               # standing height in pixels
    parts: list[_Part]
    half_width: dict[str, float]          # 3D shoulder / hip half-widths by "thorax" / "pelvis"
    mask: np.ndarray | None = None        # amodal part-id map of this figure (uint8, image size)
    coco: np.ndarray | None = None        # (17, 3): x, y, v
    mpii: np.ndarray | None = None        # (16, 3): x, y, labelled


def _place_person(rng: np.random.Generator, width: int, height: int, style: _Style) -> _Person:
    """Pose a figure, then scale, rotate and translate it into the frame (maybe truncated)."""
    pose, build, pal = _sample_pose(rng, style.difficulty), _sample_build(rng), _sample_palette(rng)
    body = _build_body(pose, build, rng)
    yaw, roll = _sample_view(rng, style.difficulty)
    yaw_rot = _ry(yaw)
    cam = body.points @ yaw_rot.T
    a = math.radians(roll)
    rot2 = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    unit = cam[:, :2] @ rot2.T
    lo, hi = unit.min(axis=0) - 0.06, unit.max(axis=0) + 0.06
    lo_h, hi_h = style.height_range
    h = float(np.exp(rng.uniform(math.log(lo_h), math.log(hi_h)))) * height
    size = (hi - lo) * h
    margin = _u(rng, 0.1, 0.5) if rng.random() < style.truncate_prob else 0.0
    origin = np.empty(2)
    for k, extent in enumerate((width, height)):
        a_min, a_max = -margin * size[k], extent - size[k] + margin * size[k]
        origin[k] = rng.uniform(min(a_min, a_max), max(a_min, a_max))
    offset = origin - lo * h

    def project(points3: np.ndarray) -> np.ndarray:
        return ((points3 @ yaw_rot.T)[:, :2] @ rot2.T) * h + offset

    px = unit * h + offset
    facing = _facing(body, yaw_rot)
    parts = _figure_parts(body, px, cam[:, 2], h, facing, pal, project)
    return _Person(px=px, depth=cam[:, 2], facing=facing, height=h, parts=parts,
                   half_width={"thorax": build.shoulder_half, "pelvis": build.hip_half})
