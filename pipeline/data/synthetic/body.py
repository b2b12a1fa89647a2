"""The posed 3D stick figure: rotations, limbs, every named point and what faces the camera."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .anatomy import FACE_LOCAL, POINT_INDEX, POINTS
from .draws import uniform
from .pose import Build, Pose

_DOWN = np.array([0.0, 1.0, 0.0])


def _rx(deg: float) -> np.ndarray:
    """Rotation about the body's x axis; positive tilts 'down' towards 'forward'."""
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rotation_y(deg: float) -> np.ndarray:
    """Rotation about the vertical axis; positive turns 'forward' towards image right."""
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(deg: float) -> np.ndarray:
    """Rotation in the frontal plane; positive swings 'down' towards the person's left (+x)."""
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])


def _limb(base: np.ndarray, side: float, angles: Sequence[float], bend_sign: float
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directions of a two-segment limb and the frame of its distal segment.

    ``side`` mirrors abduction and twist (+1 left, -1 right) so both sides share one range;
    ``bend_sign`` makes elbows fold forward (+1) and knees backward (-1).
    """
    abd, flex, twist, bend = angles
    r1 = base @ _rz(side * abd) @ _rx(flex)
    r2 = r1 @ rotation_y(side * twist) @ _rx(bend_sign * bend)
    return r1 @ _DOWN, r2 @ _DOWN, r2


@dataclass
class Body3D:
    """A posed 3D figure in its pelvis frame: the named points, the torso and head rotations, the build."""
    points: np.ndarray        # (len(POINTS), 3), pelvis frame
    torso_rot: np.ndarray
    head_rot: np.ndarray
    build: Build


def build_body(pose: Pose, b: Build, rng: np.random.Generator) -> Body3D:
    """Place every named point of a posed figure in the pelvis frame."""
    pts = np.zeros((len(POINTS), 3))
    rt = _rz(pose.bend) @ _rx(-pose.lean) @ rotation_y(pose.twist)
    thorax = rt @ np.array([0.0, -b.torso, 0.0])
    pts[POINT_INDEX["thorax"]] = thorax
    for side, name in ((1.0, "left"), (-1.0, "right")):
        pts[POINT_INDEX[f"{name}_hip"]] = np.array([side * b.hip_half, 0.0, 0.0])
        pts[POINT_INDEX[f"{name}_shoulder"]] = thorax + rt @ np.array([side * b.shoulder_half, 0.015, -0.01])
    # arms hang from the torso frame; elbows fold forward
    for k, (side, name) in enumerate(((1.0, "left"), (-1.0, "right"))):
        d1, d2, _ = _limb(rt, side, pose.arms[k], +1.0)
        elbow = pts[POINT_INDEX[f"{name}_shoulder"]] + d1 * b.upper_arm
        wrist = elbow + d2 * b.forearm
        pts[POINT_INDEX[f"{name}_elbow"]], pts[POINT_INDEX[f"{name}_wrist"]] = elbow, wrist
        pts[POINT_INDEX[f"{name}_hand"]] = wrist + d2 * 0.05
    # legs hang from the pelvis; knees fold backward, feet point forward
    for k, (side, name) in enumerate(((1.0, "left"), (-1.0, "right"))):
        d1, d2, r2 = _limb(np.eye(3), side, pose.legs[k], -1.0)
        knee = pts[POINT_INDEX[f"{name}_hip"]] + d1 * b.thigh
        ankle = knee + d2 * b.shin
        pts[POINT_INDEX[f"{name}_knee"]], pts[POINT_INDEX[f"{name}_ankle"]] = knee, ankle
        foot = r2 @ _rx(uniform(rng, -20, 20)) @ np.array([0.0, 0.25, 0.97])
        pts[POINT_INDEX[f"{name}_toe"]] = ankle + foot * 0.075
    # neck and head
    rn = rt @ _rx(-0.5 * pose.head[1])
    upper_neck = thorax + rn @ np.array([0.0, -b.neck, 0.0])
    rh = rt @ rotation_y(pose.head[0]) @ _rx(pose.head[1]) @ _rz(pose.head[2])
    head_c = upper_neck + rh @ np.array([0.0, -0.9 * b.head[1], 0.008])
    pts[POINT_INDEX["upper_neck"]], pts[POINT_INDEX["head_c"]] = upper_neck, head_c
    pts[POINT_INDEX["head_top"]] = head_c + rh @ np.array([0.0, -b.head[1], 0.0])
    scale = b.head[1] / 0.066
    for name, local in FACE_LOCAL.items():
        pts[POINT_INDEX[name]] = head_c + rh @ (np.array(local) * scale)
    pts[POINT_INDEX["badge"]] = thorax + rt @ np.array([0.055, 0.08, 0.052 * b.thick])
    return Body3D(pts, rt, rh, b)


def facing_of(body: Body3D, yaw_rot: np.ndarray) -> dict[str, float]:
    """Camera-facing component (z of the surface normal) of face features and the badge."""
    out: dict[str, float] = {}
    radii = np.array(body.build.head)
    for name, local in FACE_LOCAL.items():
        normal = np.array(local) / radii ** 2
        normal = yaw_rot @ body.head_rot @ (normal / np.linalg.norm(normal))
        out[name] = float(normal[2])
    out["badge"] = float((yaw_rot @ body.torso_rot @ np.array([0.0, 0.0, 1.0]))[2])
    return out
