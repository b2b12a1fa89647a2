"""The pretraining images: procedural "shape scenes", a segmentation map and two image-level labels.

Why this task (docs/pretrained.md, "Task"): the demo needs the analogue of ImageNet weights, i.e.
generic low-level features learnt by a task that favours neither pose loss. Each image is a
textured background (an oriented sinusoidal grating plus smooth colour noise), one large foreground
shape (random kind, size, aspect, rotation, colour, position) and a few small blobs, finished with
blur and sensor noise. The targets are

- ``mask``: semantic segmentation, per pixel: background (0), the kind of the large shape
  (1 .. len(:data:`SHAPES`)) or blob (:data:`BLOB`): boundaries, regions and part shapes, which
  need edge and corner detectors and their spatial arrangement;
- ``orientation``: the grating's orientation in :data:`ORIENTATION_BINS` bins over 180 degrees
  (oriented edge / texture filters);
- ``count``: how many small blobs there are, 0 .. ``MAX_COUNT`` (blob detectors, and spatially
  distributed evidence that has to be pooled).

Image-level classification alone (shape kind, orientation, count) was tried first: within the
budget (about 12 000 images per architecture) the shape kind stayed at chance even for the
ResNet, while the dense map gives every pixel a label. No target is a keypoint, a heatmap or a
point: region labels and image-level classes cannot prefer Gaussian-target regression (MSE) over
transport to dots (HDM). The generator
shares no code with :mod:`pipeline.data.synthetic` (no figures, no limb primitives, no pose
palette), so the pretraining images are neither the pose images nor drawn by their code: a change
to the pose generator cannot change the committed weights.

Deterministic: image ``i`` of split ``s`` in epoch ``e`` is drawn from its own stream
``default_rng([seed, SPLIT_IDS[s], e, i])``; the held-out split uses epoch 0 only and never
overlaps the training streams (different split id).
"""
from __future__ import annotations

import math
import cv2
import numpy as np

SHAPES = ("ellipse", "rectangle", "triangle", "star", "cross", "ring", "half_disk", "arrow")
ORIENTATION_BINS = 6
MAX_COUNT = 4
TASKS: dict[str, int] = {"orientation": ORIENTATION_BINS, "count": MAX_COUNT + 1}  # image-level labels
BLOB = len(SHAPES) + 1
SEG_CLASSES = len(SHAPES) + 2  # background, the shape kinds, blob
SPLIT_IDS = {"train": 1, "val": 2}


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3).astype(np.float32)


def _distinct_colour(rng: np.random.Generator, avoid: np.ndarray, min_dist: float = 90.0) -> np.ndarray:
    """A colour at least ``min_dist`` (RGB distance) from ``avoid``, so the label is visible."""
    for _ in range(20):
        c = _colour(rng)
        if float(np.linalg.norm(c - avoid)) >= min_dist:
            return c
    return (255.0 - avoid).astype(np.float32)


def _grating(rng: np.random.Generator, h: int, w: int, label: int) -> tuple[np.ndarray, np.ndarray]:
    """Oriented sinusoidal grating in two colours; returns (image float32 HxWx3, mean colour)."""
    bin_width = math.pi / ORIENTATION_BINS
    theta = (label + _u(rng, 0.15, 0.85)) * bin_width  # kept off the bin edges: the label is unambiguous
    period = _u(rng, 4.0, 12.0)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    # the stripes run along theta: the phase varies along the normal
    phase = (-xs * math.sin(theta) + ys * math.cos(theta)) * (2 * math.pi / period) + _u(rng, 0, 2 * math.pi)
    # a texture, not a second object: lower contrast than the foreground shape (60-120 RGB units)
    t = (0.5 * np.sin(phase))[..., None]
    c0 = rng.uniform(50, 205, 3).astype(np.float32)
    step = rng.normal(size=3).astype(np.float32)
    step *= _u(rng, 60, 120) / max(float(np.linalg.norm(step)), 1e-6)
    img = c0 + step * t
    noise = rng.uniform(-1, 1, (4, 4, 3)).astype(np.float32)
    img += cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC) * _u(rng, 0, 25)
    return img, c0


def _rotated(points: np.ndarray, angle: float, centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]], np.float64)
    return (points * scale) @ rot.T + centre


def _fill(img: np.ndarray, pts: np.ndarray, colour, aa: bool = True) -> None:
    cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], np.asarray(colour).tolist(),
                 lineType=cv2.LINE_AA if aa else cv2.LINE_8, shift=4)


def _star() -> np.ndarray:
    k = np.arange(10)
    r = np.where(k % 2 == 0, 1.0, 0.42)
    a = k * math.pi / 5 - math.pi / 2
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


_POLYGONS: dict[str, np.ndarray] = {
    "rectangle": np.array([[-1, -0.6], [1, -0.6], [1, 0.6], [-1, 0.6]], np.float64),
    "triangle": np.array([[0, -1], [0.95, 0.7], [-0.95, 0.7]], np.float64),
    "star": _star(),
    "cross": np.array([[-0.3, -1], [0.3, -1], [0.3, -0.3], [1, -0.3], [1, 0.3], [0.3, 0.3], [0.3, 1],
                       [-0.3, 1], [-0.3, 0.3], [-1, 0.3], [-1, -0.3], [-0.3, -0.3]], np.float64),
    "half_disk": np.stack([np.cos(np.linspace(0, math.pi, 17)), -np.sin(np.linspace(0, math.pi, 17)) + 0.4],
                          axis=1),
    "arrow": np.array([[-1, -0.25], [0.2, -0.25], [0.2, -0.65], [1, 0], [0.2, 0.65], [0.2, 0.25],
                       [-1, 0.25]], np.float64),
}


def _draw_shape(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator, kind: str,
                colour: np.ndarray) -> None:
    """The large foreground shape, wholly inside the image, 30-70 % of its short side across; its
    pixels get the label of its kind in ``mask``."""
    h, w = img.shape[:2]
    label = SHAPES.index(kind) + 1
    radius = min(h, w) * _u(rng, 0.16, 0.34)
    centre = np.array([_u(rng, radius, w - radius), _u(rng, radius, h - radius)])
    scale = radius * np.array([_u(rng, 0.8, 1.0), _u(rng, 0.8, 1.0)])
    angle = _u(rng, 0, 2 * math.pi)
    if kind in ("ellipse", "ring"):
        axes = (max(1, int(round(scale[0]))), max(1, int(round(scale[1] * _u(rng, 0.55, 1.0)))))
        centre_i = (int(round(centre[0])), int(round(centre[1])))
        thickness = -1 if kind == "ellipse" else max(2, int(round(radius * 0.3)))
        cv2.ellipse(img, centre_i, axes, math.degrees(angle), 0, 360, colour.tolist(), thickness, cv2.LINE_AA)
        cv2.ellipse(mask, centre_i, axes, math.degrees(angle), 0, 360, label, thickness, cv2.LINE_8)
        return
    pts = _rotated(_POLYGONS[kind], angle, centre, scale)
    _fill(img, pts, colour)
    _fill(mask, pts, label, aa=False)


def _draw_blobs(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator, n: int, avoid: np.ndarray) -> None:
    """``n`` small disks (radius 1.5-3 px) in well-separated places, labelled :data:`BLOB`."""
    h, w = img.shape[:2]
    placed: list[np.ndarray] = []
    while len(placed) < n:
        p = np.array([_u(rng, 3, w - 3), _u(rng, 3, h - 3)])
        if all(np.linalg.norm(p - q) >= 8 for q in placed):
            placed.append(p)
            r = _u(rng, 1.5, 3.0)
            centre, radius = (int(round(p[0] * 16)), int(round(p[1] * 16))), int(round(r * 16))
            cv2.circle(img, centre, radius, _distinct_colour(rng, avoid).tolist(), -1, cv2.LINE_AA, shift=4)
            cv2.circle(mask, centre, radius, BLOB, -1, cv2.LINE_8, shift=4)


def render(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """One image (uint8 HxWx3, RGB), its segmentation mask (uint8 HxW) and its image-level labels."""
    kind = int(rng.integers(len(SHAPES)))
    labels = {task: int(rng.integers(n)) for task, n in TASKS.items()}
    img, mean = _grating(rng, height, width, labels["orientation"])
    mask = np.zeros((height, width), np.uint8)
    _draw_shape(img, mask, rng, SHAPES[kind], _distinct_colour(rng, mean))
    _draw_blobs(img, mask, rng, labels["count"], mean)
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (3, 3), _u(rng, 0.3, 0.9))
    img += rng.standard_normal(img.shape, dtype=np.float32) * _u(rng, 1.0, 6.0)
    return np.clip(img, 0, 255).astype(np.uint8), mask, labels


def image_rng(seed: int, split: str, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_IDS[split], epoch, index])


def make_split(seed: int, split: str, epoch: int, n: int, size: tuple[int, int],
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` images of one split and epoch: (uint8 N×H×W×3 images, uint8 N×H×W masks, int64
    N×len(TASKS) image-level labels). ``size`` is (width, height), as the pose configs write it."""
    width, height = size
    images = np.empty((n, height, width, 3), np.uint8)
    masks = np.empty((n, height, width), np.uint8)
    labels = np.empty((n, len(TASKS)), np.int64)
    for i in range(n):
        images[i], masks[i], lab = render(image_rng(seed, split, epoch, i), height, width)
        labels[i] = [lab[t] for t in TASKS]
    return images, masks, labels
