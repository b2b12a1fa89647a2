"""Backgrounds, clutter shapes and the camera finish of a synthetic image.

Why: backgrounds are cluttered (including limb-like distractors) so a model must find the
figure, and blur + noise make the images less clean than the drawing."""
from __future__ import annotations

import math

import cv2
import numpy as np

from .draws import uniform
from .primitives import draw_prim, random_color


def draw_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Gradient + smooth colour texture (+ sometimes fine grain) as a uint8 BGR image."""
    c0 = np.array(random_color(rng), np.float32)
    c1 = np.array(random_color(rng), np.float32)
    ang = uniform(rng, 0, 2 * math.pi)
    xs = np.linspace(0, 1, width, dtype=np.float32)
    ys = np.linspace(0, 1, height, dtype=np.float32)
    t = xs[None, :] * math.cos(ang) + ys[:, None] * math.sin(ang)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = c0 + (c1 - c0) * t[..., None]
    gh, gw = (int(v) for v in rng.integers(2, 10, size=2))
    tex = rng.uniform(-1, 1, (gh, gw, 3)).astype(np.float32)
    img += cv2.resize(tex, (width, height), interpolation=cv2.INTER_CUBIC) * uniform(rng, 10, 60)
    if rng.random() < 0.35:
        grain = rng.uniform(-1, 1, (max(1, height // 3), max(1, width // 3), 1)).astype(np.float32)
        img += cv2.resize(grain, (width, height), interpolation=cv2.INTER_LINEAR)[..., None] * uniform(rng, 8, 30)
    return np.clip(img, 0, 255).astype(np.uint8)


def random_shape(rng: np.random.Generator, width: int, height: int,
                  region: tuple[float, float, float, float] | None = None) -> list:
    """A clutter primitive, anywhere or inside ``region`` (x0, y0, x1, y1)."""
    if region is None:
        region = (-0.1 * width, -0.1 * height, 1.1 * width, 1.1 * height)
    x0, y0, x1, y1 = region
    c = np.array([uniform(rng, x0, x1), uniform(rng, y0, y1)])
    s = min(width, height) * uniform(rng, 0.04, 0.35)
    kind = int(rng.integers(6))
    if kind == 0:  # rotated rectangle
        ang = uniform(rng, 0, math.pi) if rng.random() < 0.5 else 0.0
        half = np.array([s * uniform(rng, 0.3, 1.5), s * uniform(rng, 0.3, 1.5)])
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
        rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
        return [("poly", corners @ rot.T + c)]
    if kind == 1:
        return [("ellipse", c, (s * uniform(rng, 0.2, 1.0), s * uniform(rng, 0.2, 1.0)), uniform(rng, 0, 180))]
    if kind == 2:  # thick line
        d = rng.normal(size=2)
        d = d / max(np.linalg.norm(d), 1e-6) * s * uniform(rng, 1, 3)
        return [("line", c - d, c + d, uniform(rng, 1, 6))]
    if kind == 3:  # random convex polygon
        pts = c + rng.normal(size=(int(rng.integers(3, 7)), 2)) * s * 0.6
        return [("poly", cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64))]
    if kind == 4:  # limb-like distractor: a tapered capsule, maybe jointed
        d = rng.normal(size=2)
        d = d / max(np.linalg.norm(d), 1e-6) * s * uniform(rng, 0.6, 1.4)
        r = s * uniform(rng, 0.06, 0.18)
        prims = [("capsule", c, c + d, r, r * 0.8)]
        if rng.random() < 0.5:
            e = d @ np.array([[0, 1], [-1, 0]]) * uniform(rng, -1, 1) + d * uniform(rng, 0, 0.8)
            prims.append(("capsule", c + d, c + d + e, r * 0.8, r * 0.6))
        return prims
    # small blob
    rr = s * uniform(rng, 0.1, 0.3)
    return [("ellipse", c, (rr, rr), 0.0)]


def draw_clutter(rng: np.random.Generator, img: np.ndarray, n: int) -> None:
    """Draw ``n`` random shapes on the background, so that not every outlined shape is a person."""
    h, w = img.shape[:2]
    for _ in range(n):
        color = random_color(rng)
        for prim in random_shape(rng, w, h):
            draw_prim(img, prim, color, aa=True)


def camera_finish(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Camera-like degradation: mild blur and sensor noise."""
    if rng.random() < 0.6:
        img = cv2.GaussianBlur(img, (3, 3), uniform(rng, 0.4, 1.0))
    sigma = uniform(rng, 1.0, 6.0)
    noise = rng.standard_normal(img.shape, dtype=np.float32) * sigma
    return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
