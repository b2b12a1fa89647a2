"""Synthetic human-pose datasets written in the real COCO and MPII formats.

Why: the benchmark must run end to end (train top-down pose models, score them with
pycocotools and MPII PCKh) on a CPU in minutes, through exactly the readers, file layouts and
metrics that the real data uses. So this module draws articulated people and writes them as
COCO ``person_keypoints_*.json`` + JPEGs + person detections, and as HRNet's converted MPII
``annot/*.json`` + ``gt_valid.mat``.

The figures are a real (if small) pose problem: a 3D stick body with plausible proportions and
joint ranges is posed, turned (front, back, profile), rolled in the image plane, scaled and
projected; its parts are drawn as outlined capsules and polygons in depth order, with left and
right limbs in different colour families (left always the lighter one), a face only on the
front of the head and a badge on the left chest. Backgrounds are cluttered (including
limb-like distractors), other people and occluders hide joints (COCO v=1), people leave the
frame (v=0), and blur + noise + JPEG finish the image.

Everything is deterministic by seed: each image has its own random stream derived from
``(seed, dataset, split, index)``, so a split does not change when another split's size does.
"""
from __future__ import annotations

import colorsys
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import scipy.io
from tqdm import tqdm

from ..errors import PipelineError
from ..io import atomic_path
from .skeleton import COCO, MPII

# ----------------------------------------------------------------------------------------------
# Body model: named 3D points (units of the standing height; x = person's left, y = down,
# z = forward out of the chest). COCO's joints come first, in skeleton.COCO order.
# ----------------------------------------------------------------------------------------------

_EXTRA_POINTS = ("pelvis", "thorax", "upper_neck", "head_top", "head_c",
                 "left_hand", "right_hand", "left_toe", "right_toe", "badge")
_POINTS: tuple[str, ...] = COCO.joints + _EXTRA_POINTS
_P: dict[str, int] = {name: i for i, name in enumerate(_POINTS)}

# MPII joint name -> body-model point: the MPII joints are read off the same figure.
_MPII_FROM_BODY = {
    "r_ankle": "right_ankle", "r_knee": "right_knee", "r_hip": "right_hip",
    "l_hip": "left_hip", "l_knee": "left_knee", "l_ankle": "left_ankle",
    "pelvis": "pelvis", "thorax": "thorax", "upper_neck": "upper_neck", "head_top": "head_top",
    "r_wrist": "right_wrist", "r_elbow": "right_elbow", "r_shoulder": "right_shoulder",
    "l_shoulder": "left_shoulder", "l_elbow": "left_elbow", "l_wrist": "left_wrist",
}
_COCO_IDX = np.array([_P[n] for n in COCO.joints])
_MPII_IDX = np.array([_P[_MPII_FROM_BODY[n]] for n in MPII.joints])

# Names the real gt_valid.mat uses for dataset_joints, in MPII order.
_MAT_JOINT_NAMES = ("rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor",
                    "neck", "head", "rwri", "relb", "rsho", "lsho", "lelb", "lwri")

# Face features on the head ellipsoid (head frame, units of the standing height).
_FACE_LOCAL = {
    "nose": (0.0, 0.012, 0.060),
    "left_eye": (0.022, -0.008, 0.050), "right_eye": (-0.022, -0.008, 0.050),
    "left_ear": (0.052, 0.004, -0.004), "right_ear": (-0.052, 0.004, -0.004),
}

# Part ids (1..31) used in the label maps that decide occlusion.
TORSO, NECK, HEAD = 1, 2, 3
L_UARM, R_UARM, L_FARM, R_FARM, L_HAND, R_HAND = 4, 5, 6, 7, 8, 9
L_THIGH, R_THIGH, L_SHIN, R_SHIN, L_FOOT, R_FOOT = 10, 11, 12, 13, 14, 15
_PART_SLOTS = 32  # label = (person + 1) * 32 + part
_OCCLUDER_LABEL = 1

# Which parts must be the top-most pixel at a joint for it to count as visible (v=2).
_JOINT_PARTS: dict[str, frozenset[int]] = {
    "nose": frozenset({HEAD}), "left_eye": frozenset({HEAD}), "right_eye": frozenset({HEAD}),
    "left_ear": frozenset({HEAD}), "right_ear": frozenset({HEAD}),
    "left_shoulder": frozenset({L_UARM}), "right_shoulder": frozenset({R_UARM}),
    "left_elbow": frozenset({L_UARM, L_FARM}), "right_elbow": frozenset({R_UARM, R_FARM}),
    "left_wrist": frozenset({L_FARM, L_HAND}), "right_wrist": frozenset({R_FARM, R_HAND}),
    "left_hip": frozenset({L_THIGH}), "right_hip": frozenset({R_THIGH}),
    "left_knee": frozenset({L_THIGH, L_SHIN}), "right_knee": frozenset({R_THIGH, R_SHIN}),
    "left_ankle": frozenset({L_SHIN, L_FOOT}), "right_ankle": frozenset({R_SHIN, R_FOOT}),
}
_DOWN = np.array([0.0, 1.0, 0.0])
_SHIFT = 4            # cv2 fixed-point bits: sub-pixel drawing
_ONE = 1 << _SHIFT
_JPEG_QUALITY = 90

_COCO_SPLITS = (("train2017", 1), ("val2017", 100_000), ("test2017", 200_000))
_MPII_SPLITS = (("train", 1), ("valid", 100_000))
_SPLIT_CODE = {"train2017": 0, "val2017": 1, "test2017": 2, "train": 0, "valid": 1}
_DATASET_CODE = {"coco": 0, "mpii": 1}


@dataclass(frozen=True)
class _Style:
    """What differs between the COCO-like and the MPII-like scenes."""

    height_range: tuple[float, float]   # standing height / image height
    truncate_prob: float                # chance a person is placed partly out of frame
    occluder_prob: float                # chance of an occluder aimed at one person
    difficulty: float = 1.0             # 0..1: scales clutter, pose range, roll, truncation, occlusion


def _with_difficulty(style: _Style, d: float) -> _Style:
    """The style at difficulty ``d`` (1 = the full variety above; 0 = big, upright, unoccluded people,
    mostly facing the camera, on sparse clutter; ``_sample_view`` and ``_sample_pose`` read ``d``). Every aspect keeps some variety at any ``d``; the demo uses an intermediate
    value so a demo-size model learns something measurable in a few CPU minutes."""
    lo, hi = style.height_range
    return _Style(height_range=(hi - (hi - lo) * (0.4 + 0.6 * d), hi),
                  truncate_prob=style.truncate_prob * d, occluder_prob=style.occluder_prob * d,
                  difficulty=d)


_COCO_STYLE = _Style(height_range=(0.25, 0.9), truncate_prob=0.3, occluder_prob=0.45)
_MPII_STYLE = _Style(height_range=(0.4, 0.95), truncate_prob=0.12, occluder_prob=0.35)


# ----------------------------------------------------------------------------------------------
# Random pose
# ----------------------------------------------------------------------------------------------

@dataclass
class _Pose:
    """Joint angles in degrees; limbs are (left, right) tuples of (abduction, flexion, twist, bend)."""

    lean: float
    bend: float
    twist: float
    head: tuple[float, float, float]            # yaw, nod, tilt relative to the torso
    arms: tuple[tuple[float, ...], tuple[float, ...]]
    legs: tuple[tuple[float, ...], tuple[float, ...]]


@dataclass
class _Build:
    """Body proportions (units of the standing height) and limb thickness of one figure."""

    head: tuple[float, float, float]
    neck: float
    torso: float
    shoulder_half: float
    hip_half: float
    upper_arm: float
    forearm: float
    thigh: float
    shin: float
    thick: float


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _n(rng: np.random.Generator, mu: float, sd: float) -> float:
    return float(rng.normal(mu, sd))


def _head_pose(rng: np.random.Generator) -> tuple[float, float, float]:
    return (float(np.clip(rng.normal(0, 25), -75, 75)), _n(rng, 0, 12), _n(rng, 0, 10))


def _pose_standing(rng: np.random.Generator) -> _Pose:
    arms = tuple((_u(rng, -5, 45), _u(rng, -35, 50), _u(rng, -30, 40), _u(rng, 0, 75)) for _ in range(2))
    legs = tuple((_u(rng, -6, 14), _u(rng, -15, 25), _u(rng, -10, 30), _u(rng, -3, 25)) for _ in range(2))
    return _Pose(_n(rng, 0, 5), _n(rng, 0, 4), _n(rng, 0, 8), _head_pose(rng), arms, legs)


def _pose_walking(rng: np.random.Generator) -> _Pose:
    """Legs swing in opposite directions, arms counter-swing: gait and running."""
    swing = _u(rng, 15, 50)
    lead = 0 if rng.random() < 0.5 else 1
    leg_flex = [0.0, 0.0]
    leg_flex[lead] = swing * _u(rng, 0.6, 1.2)
    leg_flex[1 - lead] = -swing * _u(rng, 0.4, 1.0)
    knees = [0.0, 0.0]
    knees[lead] = _u(rng, 0, 45)
    knees[1 - lead] = _u(rng, 10, 100)
    legs = tuple((_u(rng, -4, 12), leg_flex[i], _u(rng, -10, 25), knees[i]) for i in range(2))
    arms = tuple((_u(rng, 0, 25), -leg_flex[i] * _u(rng, 0.5, 1.3), _u(rng, -20, 40), _u(rng, 15, 110))
                 for i in range(2))
    return _Pose(_n(rng, 6, 6), _n(rng, 0, 4), _n(rng, 0, 10), _head_pose(rng), arms, legs)


def _pose_active(rng: np.random.Generator) -> _Pose:
    """Anything goes within joint limits: sports, dancing, reaching."""
    def arm() -> tuple[float, ...]:
        elbow = _u(rng, 0, 20) if rng.random() < 0.3 else _u(rng, 0, 150)
        return (_u(rng, -20, 175), _u(rng, -60, 170), _u(rng, -60, 90), elbow)

    def leg() -> tuple[float, ...]:
        return (_u(rng, -10, 65), _u(rng, -35, 110), _u(rng, -20, 45), _u(rng, -3, 130))

    return _Pose(_n(rng, 0, 15), _n(rng, 0, 12), _n(rng, 0, 15), _head_pose(rng),
                 (arm(), arm()), (leg(), leg()))


def _pose_sitting(rng: np.random.Generator) -> _Pose:
    arms = tuple((_u(rng, -5, 40), _u(rng, -10, 80), _u(rng, -20, 60), _u(rng, 20, 120)) for _ in range(2))
    legs = tuple((_u(rng, 0, 30), _u(rng, 65, 100), _u(rng, -10, 30), _u(rng, 55, 110)) for _ in range(2))
    return _Pose(_n(rng, 0, 10), _n(rng, 0, 5), _n(rng, 0, 10), _head_pose(rng), arms, legs)


def _pose_crouching(rng: np.random.Generator) -> _Pose:
    arms = tuple((_u(rng, -5, 40), _u(rng, 10, 100), _u(rng, -20, 60), _u(rng, 10, 120)) for _ in range(2))
    legs = tuple((_u(rng, 5, 40), _u(rng, 90, 135), _u(rng, -10, 35), _u(rng, 100, 150)) for _ in range(2))
    return _Pose(_u(rng, 15, 50), _n(rng, 0, 6), _n(rng, 0, 10), _head_pose(rng), arms, legs)


_POSE_KINDS = (_pose_standing, _pose_walking, _pose_active, _pose_sitting, _pose_crouching)
_POSE_PROBS = (0.38, 0.17, 0.21, 0.13, 0.11)
_EASY_POSE_PROBS = (0.55, 0.3, 0.15, 0.0, 0.0)


def _sample_pose(rng: np.random.Generator, difficulty: float = 1.0) -> _Pose:
    probs = [(1 - difficulty) * e + difficulty * p for e, p in zip(_EASY_POSE_PROBS, _POSE_PROBS)]
    return _POSE_KINDS[int(rng.choice(len(_POSE_KINDS), p=probs))](rng)


def _sample_build(rng: np.random.Generator) -> _Build:
    head_scale = _u(rng, 0.92, 1.12)
    return _Build(
        head=(0.052 * head_scale, 0.066 * head_scale, 0.058 * head_scale),
        neck=0.045 * _u(rng, 0.8, 1.2),
        torso=0.30 * _n(rng, 1, 0.04),
        shoulder_half=0.115 * _u(rng, 0.85, 1.2),
        hip_half=0.08 * _u(rng, 0.85, 1.15),
        upper_arm=0.17 * _n(rng, 1, 0.05),
        forearm=0.15 * _n(rng, 1, 0.05),
        thigh=0.245 * _n(rng, 1, 0.04),
        shin=0.245 * _n(rng, 1, 0.04),
        thick=_u(rng, 0.75, 1.35),
    )


def _sample_view(rng: np.random.Generator, difficulty: float = 1.0) -> tuple[float, float]:
    """Body yaw (0 = facing the camera) and in-plane roll, both in degrees.

    A figure's left and right are hardest to tell apart in side views (any direction) and next
    hardest from behind (no face, no badge), so their shares (35 % and 20 % at difficulty 1) shrink
    with ``difficulty``, the back views to a quarter at 0; the rest face the camera."""
    r = rng.random()
    any_direction = 0.35 * difficulty
    back = 0.20 * (0.25 + 0.75 * difficulty)
    if r < 1.0 - any_direction - back:
        yaw = _n(rng, 0, 25)
    elif r < 1.0 - any_direction:
        yaw = _n(rng, 180, 25)
    else:
        yaw = _u(rng, 0, 360)
    r = rng.random()
    if r < 1 - 0.25 * difficulty:
        roll = _n(rng, 0, 6)
    elif r < 1 - 0.04 * difficulty:
        roll = _u(rng, -45, 45)
    else:
        roll = _u(rng, -180, 180)
    return yaw, roll


# ----------------------------------------------------------------------------------------------
# 3D figure
# ----------------------------------------------------------------------------------------------

def _rx(deg: float) -> np.ndarray:
    """Rotation about the body's x axis; positive tilts 'down' towards 'forward'."""
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(deg: float) -> np.ndarray:
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
    r2 = r1 @ _ry(side * twist) @ _rx(bend_sign * bend)
    return r1 @ _DOWN, r2 @ _DOWN, r2


@dataclass
class _Body3D:
    points: np.ndarray        # (len(_POINTS), 3), pelvis frame
    torso_rot: np.ndarray
    head_rot: np.ndarray
    build: _Build


def _build_body(pose: _Pose, b: _Build, rng: np.random.Generator) -> _Body3D:
    """Place every named point of a posed figure in the pelvis frame."""
    pts = np.zeros((len(_POINTS), 3))
    rt = _rz(pose.bend) @ _rx(-pose.lean) @ _ry(pose.twist)
    thorax = rt @ np.array([0.0, -b.torso, 0.0])
    pts[_P["thorax"]] = thorax
    for side, name in ((1.0, "left"), (-1.0, "right")):
        pts[_P[f"{name}_hip"]] = np.array([side * b.hip_half, 0.0, 0.0])
        pts[_P[f"{name}_shoulder"]] = thorax + rt @ np.array([side * b.shoulder_half, 0.015, -0.01])
    # arms hang from the torso frame; elbows fold forward
    for k, (side, name) in enumerate(((1.0, "left"), (-1.0, "right"))):
        d1, d2, _ = _limb(rt, side, pose.arms[k], +1.0)
        elbow = pts[_P[f"{name}_shoulder"]] + d1 * b.upper_arm
        wrist = elbow + d2 * b.forearm
        pts[_P[f"{name}_elbow"]], pts[_P[f"{name}_wrist"]] = elbow, wrist
        pts[_P[f"{name}_hand"]] = wrist + d2 * 0.05
    # legs hang from the pelvis; knees fold backward, feet point forward
    for k, (side, name) in enumerate(((1.0, "left"), (-1.0, "right"))):
        d1, d2, r2 = _limb(np.eye(3), side, pose.legs[k], -1.0)
        knee = pts[_P[f"{name}_hip"]] + d1 * b.thigh
        ankle = knee + d2 * b.shin
        pts[_P[f"{name}_knee"]], pts[_P[f"{name}_ankle"]] = knee, ankle
        foot = r2 @ _rx(_u(rng, -20, 20)) @ np.array([0.0, 0.25, 0.97])
        pts[_P[f"{name}_toe"]] = ankle + foot * 0.075
    # neck and head
    rn = rt @ _rx(-0.5 * pose.head[1])
    upper_neck = thorax + rn @ np.array([0.0, -b.neck, 0.0])
    rh = rt @ _ry(pose.head[0]) @ _rx(pose.head[1]) @ _rz(pose.head[2])
    head_c = upper_neck + rh @ np.array([0.0, -0.9 * b.head[1], 0.008])
    pts[_P["upper_neck"]], pts[_P["head_c"]] = upper_neck, head_c
    pts[_P["head_top"]] = head_c + rh @ np.array([0.0, -b.head[1], 0.0])
    scale = b.head[1] / 0.066
    for name, local in _FACE_LOCAL.items():
        pts[_P[name]] = head_c + rh @ (np.array(local) * scale)
    pts[_P["badge"]] = thorax + rt @ np.array([0.055, 0.08, 0.052 * b.thick])
    return _Body3D(pts, rt, rh, b)


def _facing(body: _Body3D, yaw_rot: np.ndarray) -> dict[str, float]:
    """Camera-facing component (z of the surface normal) of face features and the badge."""
    out: dict[str, float] = {}
    radii = np.array(body.build.head)
    for name, local in _FACE_LOCAL.items():
        normal = np.array(local) / radii ** 2
        normal = yaw_rot @ body.head_rot @ (normal / np.linalg.norm(normal))
        out[name] = float(normal[2])
    out["badge"] = float((yaw_rot @ body.torso_rot @ np.array([0.0, 0.0, 1.0]))[2])
    return out


# ----------------------------------------------------------------------------------------------
# Drawing primitives (shared by the colour image and the label maps)
# ----------------------------------------------------------------------------------------------

Prim = tuple  # ("capsule", p1, p2, r1, r2) | ("poly", pts) | ("ellipse", c, (ax, ay), angle) | ("line", p1, p2, w)


def _fx(p: np.ndarray) -> tuple[int, int]:
    return int(round(float(p[0]) * _ONE)), int(round(float(p[1]) * _ONE))


def _draw(canvas: np.ndarray, prim: Prim, color, aa: bool, grow: float = 0.0) -> None:
    """Draw one primitive, optionally grown by ``grow`` pixels (outlines, masks)."""
    lt = cv2.LINE_AA if aa else cv2.LINE_8
    kind = prim[0]
    if kind == "capsule":
        _, p1, p2, r1, r2 = prim
        r1, r2 = r1 + grow, r2 + grow
        d = p2 - p1
        length = float(np.hypot(d[0], d[1]))
        if length > 1e-3:
            n = np.array([-d[1], d[0]]) / length
            quad = np.array([p1 + n * r1, p2 + n * r2, p2 - n * r2, p1 - n * r1])
            cv2.fillConvexPoly(canvas, np.round(quad * _ONE).astype(np.int32), color, lt, _SHIFT)
        cv2.circle(canvas, _fx(p1), max(1, int(round(r1 * _ONE))), color, -1, lt, _SHIFT)
        cv2.circle(canvas, _fx(p2), max(1, int(round(r2 * _ONE))), color, -1, lt, _SHIFT)
    elif kind == "poly":
        pts = np.round(prim[1] * _ONE).astype(np.int32)
        cv2.fillConvexPoly(canvas, pts, color, lt, _SHIFT)
        if grow > 0:
            cv2.polylines(canvas, [pts], True, color, max(1, int(round(2 * grow))), lt, _SHIFT)
    elif kind == "ellipse":
        _, c, axes, angle = prim
        ax = (max(1, int(round((axes[0] + grow) * _ONE))), max(1, int(round((axes[1] + grow) * _ONE))))
        cv2.ellipse(canvas, _fx(c), ax, float(angle), 0, 360, color, -1, lt, _SHIFT)
    elif kind == "line":
        _, p1, p2, w = prim
        cv2.line(canvas, _fx(p1), _fx(p2), color, max(1, int(round(w + 2 * grow))), lt, _SHIFT)
    else:  # pragma: no cover - internal misuse
        raise ValueError(kind)


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    """HSV in [0, 1] to an OpenCV BGR colour."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(b * 255), int(g * 255), int(r * 255)


def _shade(c: Sequence[int], f: float) -> tuple[int, int, int]:
    return tuple(min(255, max(0, int(v * f))) for v in c)  # type: ignore[return-value]


def _random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    return _hsv(rng.random(), _u(rng, 0.0, 0.9), _u(rng, 0.15, 1.0))


# ----------------------------------------------------------------------------------------------
# Figure appearance
# ----------------------------------------------------------------------------------------------

_SKIN = ((0.07, 0.35, 0.95), (0.07, 0.45, 0.85), (0.06, 0.55, 0.65), (0.05, 0.6, 0.45), (0.06, 0.5, 0.3))
_HAIR = ((0.08, 0.6, 0.15), (0.07, 0.7, 0.35), (0.12, 0.55, 0.8), (0.0, 0.0, 0.6), (0.02, 0.7, 0.45),
         (0.0, 0.0, 0.08))


@dataclass
class _Palette:
    """Colours of one figure. Left limbs are always lighter than the right ones (a learnable cue)."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    torso: tuple[int, int, int]
    badge: tuple[int, int, int]
    limbs: dict[int, tuple[int, int, int]] = field(default_factory=dict)


def _jitter_hsv(rng: np.random.Generator, hsv: Sequence[float], amount: float) -> tuple[int, int, int]:
    h, s, v = hsv
    return _hsv(h + _n(rng, 0, 0.015), s + _n(rng, 0, amount), v + _n(rng, 0, amount))


def _sample_palette(rng: np.random.Generator) -> _Palette:
    skin = _jitter_hsv(rng, _SKIN[int(rng.integers(len(_SKIN)))], 0.05)
    hair = skin if rng.random() < 0.08 else _jitter_hsv(rng, _HAIR[int(rng.integers(len(_HAIR)))], 0.06)
    torso = _hsv(rng.random(), _u(rng, 0.2, 0.9), _u(rng, 0.3, 0.95))
    badge = _hsv(rng.random(), _u(rng, 0.0, 0.4), _u(rng, 0.85, 1.0))
    h_left = rng.random()
    h_right = h_left + _u(rng, 0.17, 0.83)
    v_left = _u(rng, 0.72, 1.0)
    v_right = v_left * _u(rng, 0.5, 0.75)
    left = (h_left, _u(rng, 0.35, 0.95), v_left)
    right = (h_right, _u(rng, 0.35, 0.95), v_right)
    short_sleeves, shorts = rng.random() < 0.3, rng.random() < 0.2
    shoes = _hsv(rng.random(), _u(rng, 0, 0.6), _u(rng, 0.05, 0.35))
    limbs: dict[int, tuple[int, int, int]] = {}
    for (h, s, v), upper_arm, fore, thigh, shin, hand, foot in (
            (left, L_UARM, L_FARM, L_THIGH, L_SHIN, L_HAND, L_FOOT),
            (right, R_UARM, R_FARM, R_THIGH, R_SHIN, R_HAND, R_FOOT)):
        limbs[upper_arm] = _hsv(h, s, v)
        limbs[fore] = skin if short_sleeves else _hsv(h, s * 0.9, v * 0.85)
        limbs[thigh] = _hsv(h + 0.03, s, v * 0.92)
        limbs[shin] = skin if shorts else _hsv(h + 0.03, s * 0.9, v * 0.8)
        limbs[hand] = skin
        limbs[foot] = shoes
    return _Palette(skin, hair, torso, badge, limbs)


@dataclass
class _Part:
    """One drawable body part: filled primitives, an outline, details painted on top."""

    part_id: int
    depth: float
    prims: list
    color: tuple[int, int, int]
    details: list = field(default_factory=list)   # (prim, colour), colour image only


def _head_parts(px: np.ndarray, depth: np.ndarray, h: float, body: _Body3D, facing: dict[str, float],
                pal: _Palette) -> list[_Part]:
    """Head = hair ellipse + face ellipse turned with the yaw + eyes/nose; ears behind it."""
    rx, ry, _ = body.build.head
    c, top = px[_P["head_c"]], px[_P["head_top"]]
    up = top - c
    ang = math.degrees(math.atan2(-up[0], up[1])) if np.hypot(*up) > 1e-6 else 0.0
    axes = (rx * h, ry * h)
    head_depth = float(depth[_P["head_c"]]) + 0.06
    details = []
    if facing["nose"] > -0.25:
        shift = 0.35 * (px[_P["nose"]] - c) - 0.12 * up
        details.append((("ellipse", c + shift, (axes[0] * 0.8, axes[1] * 0.78), ang), pal.skin))
    eye_r = max(0.6, 0.0065 * h)
    for name in ("left_eye", "right_eye"):
        if facing[name] > 0.15:
            details.append((("ellipse", px[_P[name]], (eye_r, eye_r), 0.0), (25, 25, 30)))
    if facing["nose"] > 0.15:
        details.append((("ellipse", px[_P["nose"]], (eye_r * 1.3, eye_r * 1.3), 0.0), _shade(pal.skin, 0.75)))
    parts = [_Part(HEAD, head_depth, [("ellipse", c, axes, ang)], pal.hair, details)]
    for name in ("left_ear", "right_ear"):
        if facing[name] > -0.35:
            ear = ("ellipse", px[_P[name]], (0.012 * h, 0.018 * h), ang)
            parts.append(_Part(HEAD, head_depth - 1e-4, [ear], pal.skin))
    return parts


def _torso_prims(body: _Body3D, project) -> np.ndarray:
    """Silhouette of the torso: convex hull of a projected box (stays wide in profile)."""
    b, rt = body.build, body.torso_rot
    thorax = body.points[_P["thorax"]]
    dz = 0.055 * b.thick
    corners = []
    for sx in (-1, 1):
        for sz in (-1, 1):
            corners.append(thorax + rt @ np.array([sx * (b.shoulder_half + 0.015 * b.thick), -0.012, sz * dz]))
            corners.append(np.array([sx * (b.hip_half + 0.032 * b.thick), 0.035, sz * dz]))
    pts2 = project(np.array(corners))
    return cv2.convexHull(pts2.astype(np.float32)).reshape(-1, 2).astype(np.float64)


def _figure_parts(body: _Body3D, px: np.ndarray, depth: np.ndarray, h: float, facing: dict[str, float],
                  pal: _Palette, project) -> list[_Part]:
    """All parts of one figure in back-to-front order."""
    t = body.build.thick * h
    P = _P
    parts: list[_Part] = []
    torso_details = []
    if facing["badge"] > 0.25:
        torso_details.append((("ellipse", px[P["badge"]], (0.018 * h, 0.018 * h), 0.0), pal.badge))
    torso_depth = float(depth[P["thorax"]] + depth[P["pelvis"]]) / 2
    parts.append(_Part(TORSO, torso_depth, [("poly", _torso_prims(body, project))], pal.torso, torso_details))
    parts.append(_Part(NECK, torso_depth + 1e-3,
                       [("capsule", px[P["thorax"]], px[P["upper_neck"]], 0.024 * t / body.build.thick,
                         0.021 * t / body.build.thick)], pal.skin))
    segs = (
        (L_UARM, "left_shoulder", "left_elbow", 0.028, 0.022), (R_UARM, "right_shoulder", "right_elbow", 0.028, 0.022),
        (L_FARM, "left_elbow", "left_wrist", 0.022, 0.017), (R_FARM, "right_elbow", "right_wrist", 0.022, 0.017),
        (L_HAND, "left_wrist", "left_hand", 0.017, 0.021), (R_HAND, "right_wrist", "right_hand", 0.017, 0.021),
        (L_THIGH, "left_hip", "left_knee", 0.042, 0.032), (R_THIGH, "right_hip", "right_knee", 0.042, 0.032),
        (L_SHIN, "left_knee", "left_ankle", 0.031, 0.022), (R_SHIN, "right_knee", "right_ankle", 0.031, 0.022),
        (L_FOOT, "left_ankle", "left_toe", 0.021, 0.017), (R_FOOT, "right_ankle", "right_toe", 0.021, 0.017),
    )
    for part_id, a, b, r1, r2 in segs:
        d = float(depth[P[a]] + depth[P[b]]) / 2 + 1e-4 * part_id  # ties: distal parts over proximal
        parts.append(_Part(part_id, d, [("capsule", px[P[a]], px[P[b]], r1 * t, r2 * t)], pal.limbs[part_id]))
    parts.extend(_head_parts(px, depth, h, body, facing, pal))
    parts.sort(key=lambda p: p.depth)
    return parts


# ----------------------------------------------------------------------------------------------
# Scene
# ----------------------------------------------------------------------------------------------

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


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Gradient + smooth colour texture (+ sometimes fine grain) as a uint8 BGR image."""
    c0 = np.array(_random_color(rng), np.float32)
    c1 = np.array(_random_color(rng), np.float32)
    ang = _u(rng, 0, 2 * math.pi)
    xs = np.linspace(0, 1, width, dtype=np.float32)
    ys = np.linspace(0, 1, height, dtype=np.float32)
    t = xs[None, :] * math.cos(ang) + ys[:, None] * math.sin(ang)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = c0 + (c1 - c0) * t[..., None]
    gh, gw = (int(v) for v in rng.integers(2, 10, size=2))
    tex = rng.uniform(-1, 1, (gh, gw, 3)).astype(np.float32)
    img += cv2.resize(tex, (width, height), interpolation=cv2.INTER_CUBIC) * _u(rng, 10, 60)
    if rng.random() < 0.35:
        grain = rng.uniform(-1, 1, (max(1, height // 3), max(1, width // 3), 1)).astype(np.float32)
        img += cv2.resize(grain, (width, height), interpolation=cv2.INTER_LINEAR)[..., None] * _u(rng, 8, 30)
    return np.clip(img, 0, 255).astype(np.uint8)


def _random_shape(rng: np.random.Generator, width: int, height: int,
                  region: tuple[float, float, float, float] | None = None) -> list:
    """A clutter primitive, anywhere or inside ``region`` (x0, y0, x1, y1)."""
    if region is None:
        region = (-0.1 * width, -0.1 * height, 1.1 * width, 1.1 * height)
    x0, y0, x1, y1 = region
    c = np.array([_u(rng, x0, x1), _u(rng, y0, y1)])
    s = min(width, height) * _u(rng, 0.04, 0.35)
    kind = int(rng.integers(6))
    if kind == 0:  # rotated rectangle
        ang = _u(rng, 0, math.pi) if rng.random() < 0.5 else 0.0
        half = np.array([s * _u(rng, 0.3, 1.5), s * _u(rng, 0.3, 1.5)])
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
        rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
        return [("poly", corners @ rot.T + c)]
    if kind == 1:
        return [("ellipse", c, (s * _u(rng, 0.2, 1.0), s * _u(rng, 0.2, 1.0)), _u(rng, 0, 180))]
    if kind == 2:  # thick line
        d = rng.normal(size=2)
        d = d / max(np.linalg.norm(d), 1e-6) * s * _u(rng, 1, 3)
        return [("line", c - d, c + d, _u(rng, 1, 6))]
    if kind == 3:  # random convex polygon
        pts = c + rng.normal(size=(int(rng.integers(3, 7)), 2)) * s * 0.6
        return [("poly", cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64))]
    if kind == 4:  # limb-like distractor: a tapered capsule, maybe jointed
        d = rng.normal(size=2)
        d = d / max(np.linalg.norm(d), 1e-6) * s * _u(rng, 0.6, 1.4)
        r = s * _u(rng, 0.06, 0.18)
        prims = [("capsule", c, c + d, r, r * 0.8)]
        if rng.random() < 0.5:
            e = d @ np.array([[0, 1], [-1, 0]]) * _u(rng, -1, 1) + d * _u(rng, 0, 0.8)
            prims.append(("capsule", c + d, c + d + e, r * 0.8, r * 0.6))
        return prims
    # small blob
    rr = s * _u(rng, 0.1, 0.3)
    return [("ellipse", c, (rr, rr), 0.0)]


def _draw_clutter(rng: np.random.Generator, img: np.ndarray, n: int) -> None:
    h, w = img.shape[:2]
    for _ in range(n):
        color = _random_color(rng)
        for prim in _random_shape(rng, w, h):
            _draw(img, prim, color, aa=True)


def _draw_person(img: np.ndarray, person: _Person, label: int, owner: np.ndarray) -> None:
    """Paint a figure (outline, fill, details) and record its amodal part map."""
    h, w = img.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    outline = max(0.6, person.height / 180)
    for part in person.parts:
        dark = _shade(part.color, 0.45)
        for prim in part.prims:
            _draw(img, prim, dark, aa=True, grow=outline)
        for prim in part.prims:
            _draw(img, prim, part.color, aa=True)
            _draw(mask, prim, part.part_id, aa=False, grow=outline)
        for prim, color in part.details:
            _draw(img, prim, color, aa=True)
    person.mask = mask
    sel = mask > 0
    owner[sel] = label + mask[sel]


def _draw_occluders(rng: np.random.Generator, img: np.ndarray, owner: np.ndarray, people: list[_Person],
                    style: _Style) -> None:
    """Objects in front of people: one aimed at a person (often), plus some random ones."""
    h, w = img.shape[:2]
    shapes = []
    if people and rng.random() < style.occluder_prob:
        target = people[int(rng.integers(len(people)))]
        lo, hi = target.px.min(axis=0), target.px.max(axis=0)
        shapes.append(_random_shape(rng, w, h, (lo[0], lo[1], hi[0], hi[1])))
    for _ in range(int(rng.poisson(0.35))):
        shapes.append(_random_shape(rng, w, h))
    for prims in shapes:
        color = _random_color(rng)
        for prim in prims:
            _draw(img, prim, color, aa=True)
            _draw(owner, prim, _OCCLUDER_LABEL, aa=False)


def _finish(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Camera-like degradation: mild blur and sensor noise."""
    if rng.random() < 0.6:
        img = cv2.GaussianBlur(img, (3, 3), _u(rng, 0.4, 1.0))
    sigma = _u(rng, 1.0, 6.0)
    noise = rng.standard_normal(img.shape, dtype=np.float32) * sigma
    return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def _inside(xy: np.ndarray, width: int, height: int) -> np.ndarray:
    return (xy[:, 0] >= 0) & (xy[:, 0] <= width - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= height - 1)


def _annotate(person: _Person, label: int, owner: np.ndarray) -> None:
    """COCO visibility from the final label map; MPII labels from the frame only."""
    height, width = owner.shape
    xy = person.px[_COCO_IDX]
    inside = _inside(xy, width, height)
    coco = np.zeros((len(COCO.joints), 3))
    for j, name in enumerate(COCO.joints):
        if not inside[j]:
            continue
        face = person.facing.get(name)
        if face is not None and name in ("nose", "left_eye", "right_eye") and face < -0.6:
            continue  # the back of the head: annotators leave eyes and nose out
        allowed = set(_JOINT_PARTS[name])
        if name.endswith(("shoulder", "hip")):
            # The joint sits on the torso's edge: the torso hides it only when the body is
            # turned far enough (beyond ~50 degrees) for the joint to be on the far side.
            ref = "thorax" if name.endswith("shoulder") else "pelvis"
            behind = person.depth[_P[ref]] - person.depth[_P[name]]
            if behind < 0.8 * person.half_width[ref]:
                allowed.add(TORSO)
        lab = int(owner[int(round(xy[j, 1])), int(round(xy[j, 0]))])
        own = lab // _PART_SLOTS * _PART_SLOTS == label and lab % _PART_SLOTS in allowed
        if face is not None:
            own = own and face > (0.1 if name in ("nose", "left_eye", "right_eye") else -0.35)
        coco[j] = (xy[j, 0], xy[j, 1], 2.0 if own else 1.0)
    person.coco = coco
    mxy = person.px[_MPII_IDX]
    m_in = _inside(mxy, width, height)
    person.mpii = np.concatenate([mxy, m_in[:, None].astype(float)], axis=1)


#: Placement attempts per person before it is left out of a crowded image.
_PLACEMENT_TRIES = 6


def _max_overlap(d: float) -> float:
    """How much of the smaller of two people's boxes another may cover: photos of groups show
    some overlap, and the hardest setting allows heavy overlap (crops then hold two people)."""
    return 0.15 + 0.6 * d


def _overlap(a: _Person, b: _Person) -> float:
    """Intersection of two people's joint boxes over the smaller box's area."""
    (ax0, ay0), (ax1, ay1) = a.px.min(axis=0), a.px.max(axis=0)
    (bx0, by0), (bx1, by1) = b.px.min(axis=0), b.px.max(axis=0)
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    small = min((ax1 - ax0) * (ay1 - ay0), (bx1 - bx0) * (by1 - by0))
    return iw * ih / max(small, 1e-9)


def _render_scene(rng: np.random.Generator, width: int, height: int, max_people: int,
                 style: _Style = _COCO_STYLE) -> tuple[np.ndarray, list[_Person]]:
    """Draw one image; return it (BGR uint8) with its annotated people in draw order."""
    img = _background(rng, width, height)
    d = style.difficulty
    _draw_clutter(rng, img, int(rng.integers(max(1, round(4 * d)), max(2, round(16 * d)))))
    n_people = int(rng.integers(1, max_people + 1))
    people: list[_Person] = []
    for _ in range(n_people):
        person = _place_person(rng, width, height, style)
        for _retry in range(_PLACEMENT_TRIES):
            if all(_overlap(person, other) <= _max_overlap(d) for other in people):
                people.append(person)
                break
            person = _place_person(rng, width, height, style)
    keys = [p.height * _u(rng, 0.7, 1.3) for p in people]
    people = [people[i] for i in np.argsort(keys, kind="stable")]   # far (small) first
    owner = np.zeros((height, width), np.uint16)
    for k, person in enumerate(people):
        _draw_person(img, person, (k + 1) * _PART_SLOTS, owner)
    _draw_occluders(rng, img, owner, people, style)
    for k, person in enumerate(people):
        _annotate(person, (k + 1) * _PART_SLOTS, owner)
    return _finish(rng, img), people


# ----------------------------------------------------------------------------------------------
# Writers
# ----------------------------------------------------------------------------------------------

def _write_jpeg(path: Path, image: np.ndarray, quality: int = _JPEG_QUALITY) -> None:
    """Encode and write one JPEG (a seam the tests use to simulate a crash)."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - cv2 failure
        raise PipelineError(str(path), "JPEG encoding failed")
    path.write_bytes(buf.tobytes())


def _dump_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, separators=(",", ":")) + "\n")


def _image_rng(seed: int, dataset: str, split: str, index: int) -> np.random.Generator:
    """Independent stream per image, so splits do not depend on each other's sizes."""
    return np.random.default_rng(np.random.SeedSequence([seed, _DATASET_CODE[dataset], _SPLIT_CODE[split], index]))


def _r2(v: float) -> float:
    return round(float(v), 2)


def _coco_annotation(person: _Person, image_id: int, ann_id: int) -> dict | None:
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
        flat.extend([_r2(xk), _r2(yk), int(v)] if v > 0 else [0, 0, 0])
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
    return [_r2(x0), _r2(y0), _r2(max(1.0, x1 - x0)), _r2(max(1.0, y1 - y0))]


def _score(rng: np.random.Generator, quality: float) -> float:
    return round(float(np.clip(0.3 + 0.75 * quality ** 2 + rng.normal(0, 0.06), 0.301, 1.0)), 3)


def _detections(rng: np.random.Generator, images: list[dict], anns: list[dict]) -> list[dict]:
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
            box = _jitter_box(rng, a["bbox"], width, height, _u(rng, 0.02, 0.06))
            score = _score(rng, _iou(box, a["bbox"]))
            dets.append({"image_id": iid, "category_id": 1, "bbox": box, "score": score})
            if rng.random() < 0.08:
                dup = _jitter_box(rng, a["bbox"], width, height, _u(rng, 0.06, 0.15))
                dets.append({"image_id": iid, "category_id": 1, "bbox": dup,
                             "score": round(max(0.301, score * _u(rng, 0.4, 0.8)), 3)})
        for _ in range(int(rng.poisson(0.4))):
            bh = height * _u(rng, 0.15, 0.6)
            bw = bh * _u(rng, 0.3, 0.8)
            box = [_r2(_u(rng, 0, max(1.0, width - bw))), _r2(_u(rng, 0, max(1.0, height - bh))), _r2(bw), _r2(bh)]
            dets.append({"image_id": iid, "category_id": 1, "bbox": box, "score": round(_u(rng, 0.301, 0.6), 3)})
    return dets


def _check_args(where: str, image_size: Sequence[int], counts: dict[str, int], max_people: int) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise PipelineError(where, f"image_size must be (width, height), got {image_size!r}") from None
    if width < 32 or height < 32:
        raise PipelineError(where, f"image_size must be at least 32x32, got {width}x{height}")
    for name, n in counts.items():
        if not 0 <= int(n) < 100_000:
            raise PipelineError(where, f"{name} must be in [0, 99999], got {n}")
    if not 1 <= int(max_people) <= 99:
        raise PipelineError(where, f"max_people must be in [1, 99], got {max_people}")
    return width, height


def _render_coco_split(root: Path, seed: int, split: str, base: int, n: int, width: int, height: int,
                       max_people: int, progress: bool, style: _Style = _COCO_STYLE
                       ) -> tuple[list[dict], list[dict]]:
    image_dir = root / "images" / split
    image_dir.mkdir(parents=True)
    images, anns = [], []
    for i in tqdm(range(n), desc=f"synthetic coco {split}", disable=not progress, leave=False):
        rng = _image_rng(seed, "coco", split, i)
        img, people = _render_scene(rng, width, height, max_people, style)
        image_id = base + i
        name = f"{image_id:012d}.jpg"
        _write_jpeg(image_dir / name, img)
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


def generate_coco(out_dir: Path, *, seed: int, image_size: tuple[int, int], train_images: int, val_images: int,
                  test_images: int, max_people: int, difficulty: float = 1.0, progress: bool = True) -> dict:
    """Write a synthetic COCO person-keypoints dataset (HRNet layout) under ``out_dir``, atomically.

    Returns summary counts per split (images, people, labelled and occluded keypoints) and the
    number of detections written for val and test-dev.
    """
    counts = {"train_images": train_images, "val_images": val_images, "test_images": test_images}
    width, height = _check_args("generate_coco", image_size, counts, max_people)
    if not 0.0 <= float(difficulty) <= 1.0:
        raise PipelineError("generate_coco", f"difficulty must be in [0, 1], got {difficulty}")
    sizes = {"train2017": train_images, "val2017": val_images, "test2017": test_images}
    summary: dict = {}
    with atomic_path(out_dir) as root:
        (root / "annotations").mkdir(parents=True)
        (root / "person_detection_results").mkdir()
        splits = {}
        for split, base in _COCO_SPLITS:
            splits[split] = _render_coco_split(root, seed, split, base, int(sizes[split]), width, height,
                                               int(max_people), progress, _with_difficulty(_COCO_STYLE, difficulty))
            summary[split] = _split_summary(*splits[split])
        for split, ann_name in (("train2017", "person_keypoints_train2017.json"),
                                ("val2017", "person_keypoints_val2017.json"),
                                ("test2017", "person_keypoints_test-dev2017.json")):
            images, anns = splits[split]
            _dump_json(root / "annotations" / ann_name, {**_coco_header(split), "images": images,
                                                         "annotations": anns, "categories": _coco_categories()})
        test_images_list = splits["test2017"][0]
        _dump_json(root / "annotations" / "image_info_test-dev2017.json",
                   {**_coco_header("test-dev2017"), "images": test_images_list, "categories": _coco_categories()})
        summary["detections"] = {}
        for split, det_name in (("val2017", "COCO_val2017_detections_AP_H_56_person.json"),
                                ("test2017", "COCO_test-dev2017_detections_AP_H_609_person.json")):
            det_rng = np.random.default_rng(np.random.SeedSequence([seed, 0, _SPLIT_CODE[split], 10**6]))
            dets = _detections(det_rng, *splits[split])
            _dump_json(root / "person_detection_results" / det_name, dets)
            summary["detections"][split] = len(dets)
    return summary


# ----------------------------------------------------------------------------------------------
# MPII
# ----------------------------------------------------------------------------------------------

@dataclass
class _MpiiRecord:
    """One annotated MPII person: the JSON entry and the gt_valid.mat columns."""

    entry: dict
    missing: np.ndarray     # (16,) 1 = unlabelled
    headbox0: np.ndarray    # (2, 2) [[x1, y1], [x2, y2]], 0-based


def _mpii_record(rng: np.random.Generator, person: _Person, image_name: str) -> _MpiiRecord | None:
    """MPII entry for a figure with at least 4 labelled joints (MPII skips barely-visible people)."""
    labelled = person.mpii[:, 2] > 0
    if labelled.sum() < 4:
        return None
    xy0 = person.mpii[:, :2]
    joints = [[_r2(x + 1), _r2(y + 1)] if ok else [-1.0, -1.0] for (x, y), ok in zip(xy0, labelled)]
    thorax, pelvis = person.px[_P["thorax"]], person.px[_P["pelvis"]]
    centre = (thorax + pelvis) / 2 + rng.normal(0, 0.03 * person.height, 2)
    scale = person.height / 200.0 * float(np.exp(rng.normal(0, 0.03)))
    top, neck = person.px[_P["head_top"]], person.px[_P["upper_neck"]]
    mid = (top + neck) / 2
    half = 0.5 * _head_length(person)
    headbox = np.array([mid - half, mid + half])
    entry = {"image": image_name, "center": [_r2(centre[0] + 1), _r2(centre[1] + 1)], "scale": round(scale, 4),
             "joints": joints, "joints_vis": [int(v) for v in labelled]}
    return _MpiiRecord(entry, (~labelled).astype(np.float64), headbox)


def _head_length(person: _Person) -> float:
    """Upper-neck to head-top length in pixels, before projection shortens it (MPII head size)."""
    return 1.9 * 0.066 * person.height


def _render_mpii_split(root: Path, seed: int, split: str, base: int, n: int, width: int, height: int,
                       max_people: int, progress: bool, style: _Style = _MPII_STYLE) -> list[_MpiiRecord]:
    records: list[_MpiiRecord] = []
    for i in tqdm(range(n), desc=f"synthetic mpii {split}", disable=not progress, leave=False):
        rng = _image_rng(seed, "mpii", split, i)
        img, people = _render_scene(rng, width, height, max_people, style)
        name = f"{base + i:09d}.jpg"
        _write_jpeg(root / "images" / name, img)
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
    width, height = _check_args("generate_mpii", image_size, counts, max_people)
    if not 0.0 <= float(difficulty) <= 1.0:
        raise PipelineError("generate_mpii", f"difficulty must be in [0, 1], got {difficulty}")
    sizes = {"train": int(train_images), "valid": int(val_images)}
    summary: dict = {}
    with atomic_path(out_dir) as root:
        (root / "images").mkdir(parents=True)
        (root / "annot").mkdir()
        for split, base in _MPII_SPLITS:
            records = _render_mpii_split(root, seed, split, base, sizes[split], width, height,
                                         int(max_people), progress, _with_difficulty(_MPII_STYLE, difficulty))
            _dump_json(root / "annot" / f"{split}.json", [r.entry for r in records])
            if split == "valid":
                _write_gt_mat(root / "annot" / "gt_valid.mat", records)
            summary[split] = {"images": sizes[split], "people": len(records),
                              "labelled_joints": int(sum(sum(r.entry["joints_vis"]) for r in records))}
    return summary

