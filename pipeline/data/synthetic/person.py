"""One figure placed in the frame: posed, turned, rolled, scaled, projected (maybe truncated)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .appearance import Part, figure_parts, sample_palette
from .body import build_body, facing_of, rotation_y
from .draws import uniform
from .pose import sample_build, sample_pose, sample_view
from .style import Style


@dataclass
class Person:
    """A rendered figure and everything the annotation writers need about it."""

    px: np.ndarray              # (len(POINTS), 2) image coordinates
    depth: np.ndarray           # (len(POINTS),) camera depth (towards the camera), units of height
    facing: dict[str, float]
    height: float               # standing height in pixels
    parts: list[Part]
    half_width: dict[str, float]          # 3D shoulder / hip half-widths by "thorax" / "pelvis"
    mask: np.ndarray | None = None        # amodal part-id map of this figure (uint8, image size)
    coco: np.ndarray | None = None        # (17, 3): x, y, v
    mpii: np.ndarray | None = None        # (16, 3): x, y, labelled


def place_person(rng: np.random.Generator, width: int, height: int, style: Style) -> Person:
    """Pose a figure, then scale, rotate and translate it into the frame (maybe truncated)."""
    pose, build, pal = sample_pose(rng, style.difficulty), sample_build(rng), sample_palette(rng)
    body = build_body(pose, build, rng)
    yaw, roll = sample_view(rng, style.difficulty)
    yaw_rot = rotation_y(yaw)
    cam = body.points @ yaw_rot.T
    a = math.radians(roll)
    rot2 = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    unit = cam[:, :2] @ rot2.T
    lo, hi = unit.min(axis=0) - 0.06, unit.max(axis=0) + 0.06
    lo_h, hi_h = style.height_range
    h = float(np.exp(rng.uniform(math.log(lo_h), math.log(hi_h)))) * height
    size = (hi - lo) * h
    margin = uniform(rng, 0.1, 0.5) if rng.random() < style.truncate_prob else 0.0
    origin = np.empty(2)
    for k, extent in enumerate((width, height)):
        a_min, a_max = -margin * size[k], extent - size[k] + margin * size[k]
        origin[k] = rng.uniform(min(a_min, a_max), max(a_min, a_max))
    offset = origin - lo * h

    def project(points3: np.ndarray) -> np.ndarray:
        return ((points3 @ yaw_rot.T)[:, :2] @ rot2.T) * h + offset

    px = unit * h + offset
    facing = facing_of(body, yaw_rot)
    parts = figure_parts(body, px, cam[:, 2], h, facing, pal, project)
    return Person(px=px, depth=cam[:, 2], facing=facing, height=h, parts=parts,
                   half_width={"thorax": build.shoulder_half, "pelvis": build.hip_half})
