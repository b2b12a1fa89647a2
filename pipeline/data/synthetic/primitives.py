"""Drawing primitives and colours, shared by the colour image and the label maps.

Why one drawing routine for both: the occlusion labels then cover exactly the pixels painted."""
from __future__ import annotations

import colorsys
from typing import Sequence

import cv2
import numpy as np

from .draws import uniform

_SHIFT = 4            # cv2 fixed-point bits: sub-pixel drawing
_ONE = 1 << _SHIFT

Prim = tuple  # ("capsule", p1, p2, r1, r2) | ("poly", pts) | ("ellipse", c, (ax, ay), angle) | ("line", p1, p2, w)


def _fx(p: np.ndarray) -> tuple[int, int]:
    return int(round(float(p[0]) * _ONE)), int(round(float(p[1]) * _ONE))


def draw_prim(canvas: np.ndarray, prim: Prim, color, aa: bool, grow: float = 0.0) -> None:
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


def hsv_color(h: float, s: float, v: float) -> tuple[int, int, int]:
    """HSV in [0, 1] to an OpenCV BGR colour."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(b * 255), int(g * 255), int(r * 255)


def shade(c: Sequence[int], f: float) -> tuple[int, int, int]:
    """Colour ``c`` scaled by ``f`` (darker below 1, lighter above), clipped to 0..255."""
    return tuple(min(255, max(0, int(v * f))) for v in c)  # type: ignore[return-value]


def random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    """A random BGR colour of any hue, for clutter and occluders."""
    return hsv_color(rng.random(), uniform(rng, 0.0, 0.9), uniform(rng, 0.15, 1.0))
