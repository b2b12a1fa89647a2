"""How a figure looks: its palette and its drawable parts in depth order.

Why: left and right limbs get different colour families (left always the lighter one), the
face is drawn only on the front of the head and a badge on the left chest, so a model can
tell a figure's left from its right as it can on real people."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from .anatomy import (HEAD, L_FARM, L_FOOT, L_HAND, L_SHIN, L_THIGH, L_UARM, NECK, R_FARM, R_FOOT, R_HAND,
                      R_SHIN, R_THIGH, R_UARM, TORSO, POINT_INDEX)
from .body import Body3D
from .draws import gauss, uniform
from .primitives import hsv_color, shade

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
    return hsv_color(h + gauss(rng, 0, 0.015), s + gauss(rng, 0, amount), v + gauss(rng, 0, amount))


def sample_palette(rng: np.random.Generator) -> _Palette:
    """A figure's colours (skin, hair, clothes, badge), drawn for each person the scene places."""
    skin = _jitter_hsv(rng, _SKIN[int(rng.integers(len(_SKIN)))], 0.05)
    hair = skin if rng.random() < 0.08 else _jitter_hsv(rng, _HAIR[int(rng.integers(len(_HAIR)))], 0.06)
    torso = hsv_color(rng.random(), uniform(rng, 0.2, 0.9), uniform(rng, 0.3, 0.95))
    badge = hsv_color(rng.random(), uniform(rng, 0.0, 0.4), uniform(rng, 0.85, 1.0))
    h_left = rng.random()
    h_right = h_left + uniform(rng, 0.17, 0.83)
    v_left = uniform(rng, 0.72, 1.0)
    v_right = v_left * uniform(rng, 0.5, 0.75)
    left = (h_left, uniform(rng, 0.35, 0.95), v_left)
    right = (h_right, uniform(rng, 0.35, 0.95), v_right)
    short_sleeves, shorts = rng.random() < 0.3, rng.random() < 0.2
    shoes = hsv_color(rng.random(), uniform(rng, 0, 0.6), uniform(rng, 0.05, 0.35))
    limbs: dict[int, tuple[int, int, int]] = {}
    for (h, s, v), upper_arm, fore, thigh, shin, hand, foot in (
            (left, L_UARM, L_FARM, L_THIGH, L_SHIN, L_HAND, L_FOOT),
            (right, R_UARM, R_FARM, R_THIGH, R_SHIN, R_HAND, R_FOOT)):
        limbs[upper_arm] = hsv_color(h, s, v)
        limbs[fore] = skin if short_sleeves else hsv_color(h, s * 0.9, v * 0.85)
        limbs[thigh] = hsv_color(h + 0.03, s, v * 0.92)
        limbs[shin] = skin if shorts else hsv_color(h + 0.03, s * 0.9, v * 0.8)
        limbs[hand] = skin
        limbs[foot] = shoes
    return _Palette(skin, hair, torso, badge, limbs)


@dataclass
class Part:
    """One drawable body part: filled primitives, an outline, details painted on top."""

    part_id: int
    depth: float
    prims: list
    color: tuple[int, int, int]
    details: list = field(default_factory=list)   # (prim, colour), colour image only


def _head_parts(px: np.ndarray, depth: np.ndarray, h: float, body: Body3D, facing: dict[str, float],
                pal: _Palette) -> list[Part]:
    """Head = hair ellipse + face ellipse turned with the yaw + eyes/nose; ears behind it."""
    rx, ry, _ = body.build.head
    c, top = px[POINT_INDEX["head_c"]], px[POINT_INDEX["head_top"]]
    up = top - c
    ang = math.degrees(math.atan2(-up[0], up[1])) if np.hypot(*up) > 1e-6 else 0.0
    axes = (rx * h, ry * h)
    head_depth = float(depth[POINT_INDEX["head_c"]]) + 0.06
    details = []
    if facing["nose"] > -0.25:
        shift = 0.35 * (px[POINT_INDEX["nose"]] - c) - 0.12 * up
        details.append((("ellipse", c + shift, (axes[0] * 0.8, axes[1] * 0.78), ang), pal.skin))
    eye_r = max(0.6, 0.0065 * h)
    for name in ("left_eye", "right_eye"):
        if facing[name] > 0.15:
            details.append((("ellipse", px[POINT_INDEX[name]], (eye_r, eye_r), 0.0), (25, 25, 30)))
    if facing["nose"] > 0.15:
        details.append((("ellipse", px[POINT_INDEX["nose"]], (eye_r * 1.3, eye_r * 1.3), 0.0), shade(pal.skin, 0.75)))
    parts = [Part(HEAD, head_depth, [("ellipse", c, axes, ang)], pal.hair, details)]
    for name in ("left_ear", "right_ear"):
        if facing[name] > -0.35:
            ear = ("ellipse", px[POINT_INDEX[name]], (0.012 * h, 0.018 * h), ang)
            parts.append(Part(HEAD, head_depth - 1e-4, [ear], pal.skin))
    return parts


def _torso_prims(body: Body3D, project) -> np.ndarray:
    """Silhouette of the torso: convex hull of a projected box (stays wide in profile)."""
    b, rt = body.build, body.torso_rot
    thorax = body.points[POINT_INDEX["thorax"]]
    dz = 0.055 * b.thick
    corners = []
    for sx in (-1, 1):
        for sz in (-1, 1):
            corners.append(thorax + rt @ np.array([sx * (b.shoulder_half + 0.015 * b.thick), -0.012, sz * dz]))
            corners.append(np.array([sx * (b.hip_half + 0.032 * b.thick), 0.035, sz * dz]))
    pts2 = project(np.array(corners))
    return cv2.convexHull(pts2.astype(np.float32)).reshape(-1, 2).astype(np.float64)


def figure_parts(body: Body3D, px: np.ndarray, depth: np.ndarray, h: float, facing: dict[str, float],
                  pal: _Palette, project) -> list[Part]:
    """All parts of one figure in back-to-front order."""
    t = body.build.thick * h
    P = POINT_INDEX
    parts: list[Part] = []
    torso_details = []
    if facing["badge"] > 0.25:
        torso_details.append((("ellipse", px[P["badge"]], (0.018 * h, 0.018 * h), 0.0), pal.badge))
    torso_depth = float(depth[P["thorax"]] + depth[P["pelvis"]]) / 2
    parts.append(Part(TORSO, torso_depth, [("poly", _torso_prims(body, project))], pal.torso, torso_details))
    parts.append(Part(NECK, torso_depth + 1e-3,
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
        parts.append(Part(part_id, d, [("capsule", px[P[a]], px[P[b]], r1 * t, r2 * t)], pal.limbs[part_id]))
    parts.extend(_head_parts(px, depth, h, body, facing, pal))
    parts.sort(key=lambda p: p.depth)
    return parts
