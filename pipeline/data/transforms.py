"""Top-down crop geometry and training augmentation (docs/conventions.md).

Coordinates: pixel centres at integers in every frame (original image, input crop,
heatmap). A crop is defined by a centre ``c``, a scale ``(sw, sh)`` in units of
``pixel_std`` (the box is ``sw*200 x sh*200`` image pixels), a rotation in degrees and
an output size ``(W, H)``. The box's edges map onto the output's outer pixel edges::

    out = D @ R(-rot) @ (p - c) + ((W - 1) / 2, (H - 1) / 2)
    D = diag(W / (sw * pixel_std), H / (sh * pixel_std))
    R(a) = [[cos a, -sin a], [sin a, cos a]]        (x right, y down)

Rotation sign (as HRNet): a positive ``rot`` makes the person appear rotated
counter-clockwise on screen in the crop. Example: the image point straight above the
centre lands straight left of the output centre for ``rot = +90``. Equivalently the crop
box is rotated clockwise (on screen) by ``rot`` in the original image.

The same function with the heatmap size gives the image->heatmap transform, so for a
stride ``s = W_in / W_hm`` the two frames satisfy ``x_hm = (x_in + 0.5) / s - 0.5``.
Horizontal flip of a ``W``-wide image maps ``x -> W - 1 - x``.

``convention="udp"`` (Huang et al., CVPR 2020, "Unbiased Data Processing") maps the box's edges
onto the output's first and last pixel CENTRES instead: ``D = diag((W - 1) / (sw * pixel_std), ...)``,
same offset. Input and heatmap frames then satisfy ``x_hm = x_in * (W_hm - 1) / (W_in - 1)``; the
flip is the same ``x -> W - 1 - x``. A run uses one convention for its crops, targets and decoding
(docs/conventions.md, "UDP").
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import cv2
import numpy as np

from .skeleton import JointSet

PIXEL_STD = 200.0

# Chance that the half-body crop keeps the upper body: HRNet's JointsDataset and HRFormer's vendored
# MMPose 0.x both draw ``np.random.randn() < 0.5``, i.e. P(N(0,1) < 0.5) = Φ(0.5) ≈ 0.6915, not the
# 0.5 their code seems to intend. Kept as the reference draws it (config key half_body_upper_prob).
HALF_BODY_UPPER_PROB = 0.5 * (1.0 + math.erf(0.5 / math.sqrt(2.0)))

# Joints treated as "upper body" by the half-body augmentation.
UPPER_BODY_IDS = {
    "coco": list(range(11)),  # nose, eyes, ears, shoulders, elbows, wrists
    "mpii": [7, 8, 9, 10, 11, 12, 13, 14, 15],  # thorax, neck, head, arms
}


# --------------------------------------------------------------------------- boxes
def box_to_center_scale(
    box_xywh: Sequence[float],
    aspect_ratio: float,
    pixel_std: float = PIXEL_STD,
    padding: float = 1.25,
) -> tuple[np.ndarray, np.ndarray]:
    """COCO box ``[x, y, w, h]`` -> ``(center (2,), scale (2,))`` as HRNet.

    The box is expanded (never shrunk) to ``aspect_ratio = w/h`` of the network input,
    expressed in units of ``pixel_std`` and multiplied by ``padding``. The centre is
    ``(x + w/2, y + h/2)`` (HRNet's formula, kept for comparability).
    """
    x, y, w, h = (float(v) for v in box_xywh[:4])
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float64)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w / pixel_std, h / pixel_std], dtype=np.float64)
    if center[0] != -1:
        scale = scale * padding
    return center, scale


def shift_box_centers(records: Sequence[dict], rng: np.random.Generator, prob: float,
                      factor: float) -> list[dict]:
    """HRFormer's training-box centre shift, drawn once when the data loads.

    HRFormer's vendored MMPose 0.x dataset (``TopDownCocoDataset._xywh2cs``) moves the centre of
    each training box, with probability ``prob`` (0.3), by ``0.4 * (rand(2) - 0.5) * [w, h]``, i.e.
    uniformly up to ±``factor`` (0.2) of the box's width and height, before the box is widened to
    the input's aspect ratio; the scale is not changed. The shift is part of the record for the
    whole training (every epoch sees the same shifted box), unlike MMPose 1.x's per-sample shift
    (``shift_prob`` / ``shift_factor`` in :func:`random_augment`).

    Records are visited in order, each drawing ``rng.random()`` and, if shifted, ``rng.random(2)``
    (the reference's order of draws). Each record needs its ground-truth ``box`` ``[x, y, w, h]``;
    returns new records (the input is not modified).
    """
    out = []
    for rec in records:
        rec = dict(rec, center=np.array(rec["center"], dtype=np.float64))
        if rng.random() < prob:
            w, h = float(rec["box"][2]), float(rec["box"][3])
            rec["center"] += factor * (2.0 * rng.random(2) - 1.0) * np.array([w, h])
        out.append(rec)
    return out


# --------------------------------------------------------------------------- affine
#: Where a crop box's edges land in the output: "edges" = the outer pixel edges (this project's,
#: the default), "udp" = the first and last pixel centres (UDP's).
CONVENTIONS = ("edges", "udp")


def box_span(output_size: Sequence[int], convention: str = "edges") -> tuple[float, float]:
    """Output pixels the box's width and height span: ``(W, H)`` for "edges", ``(W - 1, H - 1)`` for
    "udp" (pixel centre 0 to pixel centre W - 1). The only place the two conventions differ."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown coordinate convention {convention!r}; choose one of {CONVENTIONS}")
    shrink = 1.0 if convention == "udp" else 0.0
    return float(output_size[0]) - shrink, float(output_size[1]) - shrink


def affine_matrices(
    centers: np.ndarray,
    scales: np.ndarray,
    rotations: np.ndarray | float,
    output_size: Sequence[int],
    inverse: bool = False,
    pixel_std: float = PIXEL_STD,
    convention: str = "edges",
) -> np.ndarray:
    """Batched :func:`get_affine_matrix`: ``(N,2)``, ``(N,2)``, ``(N,)`` -> ``(N,2,3)``."""
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
    scales = np.asarray(scales, dtype=np.float64).reshape(-1, 2)
    n = centers.shape[0]
    rot = np.broadcast_to(np.asarray(rotations, dtype=np.float64), (n,))
    out_w, out_h = float(output_size[0]), float(output_size[1])
    span_w, span_h = box_span(output_size, convention)
    theta = np.deg2rad(rot)
    cos, sin = np.cos(theta), np.sin(theta)
    dx = span_w / (scales[:, 0] * pixel_std)
    dy = span_h / (scales[:, 1] * pixel_std)
    offset = np.array([(out_w - 1.0) / 2.0, (out_h - 1.0) / 2.0])
    m = np.zeros((n, 2, 3), dtype=np.float64)
    if not inverse:
        # A = D @ R(-rot) = [[dx cos, dx sin], [-dy sin, dy cos]]
        m[:, 0, 0] = dx * cos
        m[:, 0, 1] = dx * sin
        m[:, 1, 0] = -dy * sin
        m[:, 1, 1] = dy * cos
        m[:, :, 2] = offset[None, :] - np.einsum("nij,nj->ni", m[:, :, :2], centers)
    else:
        # A^-1 = R(rot) @ D^-1 = [[cos/dx, -sin/dy], [sin/dx, cos/dy]]
        m[:, 0, 0] = cos / dx
        m[:, 0, 1] = -sin / dy
        m[:, 1, 0] = sin / dx
        m[:, 1, 1] = cos / dy
        m[:, :, 2] = centers - np.einsum("nij,j->ni", m[:, :, :2], offset)
    return m


def get_affine_matrix(
    center: Sequence[float],
    scale: Sequence[float],
    rotation_deg: float,
    output_size: Sequence[int],
    inverse: bool = False,
    pixel_std: float = PIXEL_STD,
    convention: str = "edges",
) -> np.ndarray:
    """``(2,3)`` float64 matrix mapping image -> output (or output -> image if ``inverse``).

    See the module docstring for the exact convention (box edges onto output pixel edges, or onto
    the outer pixel centres with ``convention="udp"``; positive rotation = counter-clockwise
    appearance in the crop).
    """
    return affine_matrices(
        np.asarray(center, dtype=np.float64)[None],
        np.asarray(scale, dtype=np.float64)[None],
        float(rotation_deg), output_size, inverse, pixel_std, convention,
    )[0]


def affine_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a ``(2,3)`` affine matrix to ``(N,2)`` points (float64 result)."""
    p = np.asarray(points, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


def hflip_matrix(image_width: int) -> np.ndarray:
    """``(2,3)`` matrix of the horizontal mirror ``x -> W - 1 - x``."""
    return np.array([[-1.0, 0.0, image_width - 1.0], [0.0, 1.0, 0.0]])


def compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(2,3)`` matrix of ``a ∘ b`` (apply ``b`` first)."""
    a3 = np.vstack([a, [0.0, 0.0, 1.0]])
    b3 = np.vstack([b, [0.0, 0.0, 1.0]])
    return (a3 @ b3)[:2]


def warp(image: np.ndarray, matrix: np.ndarray, output_size: Sequence[int]) -> np.ndarray:
    """``cv2.warpAffine`` with bilinear interpolation and a black border.

    OpenCV also puts pixel centres at integers, so ``matrix`` is used as is.
    """
    return cv2.warpAffine(
        image, np.asarray(matrix, dtype=np.float64), (int(output_size[0]), int(output_size[1])),
        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )


def crop(
    image: np.ndarray,
    center: Sequence[float],
    scale: Sequence[float],
    rotation: float,
    output_size: Sequence[int],
    convention: str = "edges",
) -> np.ndarray:
    """Crop ``image`` to ``output_size = (W, H)`` with the top-down affine transform."""
    return warp(image, get_affine_matrix(center, scale, rotation, output_size, convention=convention),
                output_size)


def heatmap_to_image(
    coords_hm: np.ndarray,
    centers: np.ndarray,
    scales: np.ndarray,
    heatmap_size: Sequence[int],
    rotations: np.ndarray | float = 0.0,
    pixel_std: float = PIXEL_STD,
    convention: str = "edges",
) -> np.ndarray:
    """Heatmap-pixel coordinates ``(N,K,2)`` -> original-image coordinates ``(N,K,2)``.

    Uses the inverse affine matrix of the heatmap frame (rotation 0 at test time), in the
    ``convention`` the heatmaps were trained in (decoding with the other one misplaces points by
    up to half a heatmap pixel at the box edges: docs/conventions.md, "UDP").
    """
    coords = np.asarray(coords_hm, dtype=np.float64)
    n = coords.shape[0]
    m = affine_matrices(centers, scales, rotations, heatmap_size, inverse=True, pixel_std=pixel_std,
                        convention=convention)
    if m.shape[0] != n:
        raise ValueError(f"{n} sets of coordinates but {m.shape[0]} centres/scales")
    return np.einsum("nij,nkj->nki", m[:, :, :2], coords) + m[:, None, :, 2]


def image_to_heatmap(
    coords: np.ndarray,
    centers: np.ndarray,
    scales: np.ndarray,
    heatmap_size: Sequence[int],
    rotations: np.ndarray | float = 0.0,
    pixel_std: float = PIXEL_STD,
    convention: str = "edges",
) -> np.ndarray:
    """Inverse of :func:`heatmap_to_image`: image ``(N,K,2)`` -> heatmap ``(N,K,2)``."""
    coords = np.asarray(coords, dtype=np.float64)
    m = affine_matrices(centers, scales, rotations, heatmap_size, inverse=False, pixel_std=pixel_std,
                        convention=convention)
    return np.einsum("nij,nkj->nki", m[:, :, :2], coords) + m[:, None, :, 2]


# --------------------------------------------------------------------------- augmentation
def default_aug_cfg(joint_set: JointSet, **overrides: Any) -> dict:
    """HRNet COCO defaults for ``joint_set``; keyword arguments override keys."""
    cfg = {
        "scale_factor": 0.35,
        "rot_factor": 45.0,
        "rot_prob": 0.6,
        "flip": True,
        "flip_prob": 0.5,
        "half_body_prob": 0.3,
        "half_body_upper_prob": HALF_BODY_UPPER_PROB,
        "num_joints_half_body": 8,
        "upper_body_ids": list(UPPER_BODY_IDS.get(joint_set.name, [])),
        "flip_pairs": [list(p) for p in joint_set.flip_pairs],
    }
    cfg.update(overrides)
    return cfg


def flip_permutation(num_joints: int, flip_pairs: Sequence[Sequence[int]]) -> np.ndarray:
    """Permutation swapping the left/right joints of ``flip_pairs``."""
    idx = np.arange(num_joints)
    for a, b in flip_pairs:
        idx[a], idx[b] = b, a
    return idx


def fliplr_joints(
    joints: np.ndarray, vis: np.ndarray, image_width: int, flip_pairs: Sequence[Sequence[int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Mirror joints about the image (``x -> W - 1 - x``) and swap left/right."""
    perm = flip_permutation(len(joints), flip_pairs)
    j = np.array(joints, dtype=np.float64, copy=True)
    j[:, 0] = image_width - 1.0 - j[:, 0]
    return j[perm], np.asarray(vis)[perm].copy()


def half_body_box(
    rng: np.random.Generator,
    joints: np.ndarray,
    vis: np.ndarray,
    upper_body_ids: Sequence[int],
    aspect_ratio: float,
    pixel_std: float = PIXEL_STD,
    upper_prob: float = HALF_BODY_UPPER_PROB,
) -> tuple[np.ndarray, np.ndarray] | None:
    """HRNet's half-body box: the visible upper (or lower) joints, box x1.5.

    The upper body is picked with probability ``upper_prob`` when it has more than 2 visible
    joints, otherwise the lower body if it has more than 2, otherwise the upper body. The
    default is the references' ≈ 0.69 (see :data:`HALF_BODY_UPPER_PROB`: HRNet and HRFormer draw
    ``randn() < 0.5``), so the crops are upper bodies about twice as often as lower bodies.
    ``None`` if fewer than 2 joints were selected. The centre is the mean of the selected joints.
    """
    upper_set = set(int(i) for i in upper_body_ids)
    visible = np.flatnonzero(np.asarray(vis) > 0)
    upper = [i for i in visible if i in upper_set]
    lower = [i for i in visible if i not in upper_set]
    if rng.random() < upper_prob and len(upper) > 2:
        sel = upper
    else:
        sel = lower if len(lower) > 2 else upper
    if len(sel) < 2:
        return None
    pts = np.asarray(joints, dtype=np.float64)[sel]
    center = pts.mean(axis=0)
    w, h = pts.max(axis=0) - pts.min(axis=0)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w / pixel_std, h / pixel_std]) * 1.5
    return center, scale


def _maybe_half_body(rng: np.random.Generator, c: np.ndarray, s: np.ndarray, j: np.ndarray, v: np.ndarray,
                     cfg: dict, aspect: float, pixel_std: float) -> tuple[np.ndarray, np.ndarray]:
    """``(center, scale)`` after the half-body draw: the box of half the body with prob
    ``half_body_prob`` when enough joints are visible, else unchanged. Draws from ``rng`` only when
    the draw applies, as HRNet does (so the random stream matches it)."""
    hb_prob = float(cfg.get("half_body_prob", 0.0))
    if (
        hb_prob > 0
        and int(np.sum(v > 0)) > int(cfg.get("num_joints_half_body", 8))
        and rng.random() < hb_prob
    ):
        hb = half_body_box(rng, j, v, cfg.get("upper_body_ids", []), aspect, pixel_std,
                           float(cfg.get("half_body_upper_prob", HALF_BODY_UPPER_PROB)))
        if hb is not None:
            c, s = hb
    return c, s


def _maybe_shift(rng: np.random.Generator, c: np.ndarray, s: np.ndarray, cfg: dict, pixel_std: float) -> np.ndarray:
    """The centre after MMPose's box shift (prob ``shift_prob``); with no shift configured nothing is
    drawn, so HRNet's random stream is unchanged."""
    shift_prob = float(cfg.get("shift_prob", 0.0))
    if shift_prob > 0 and rng.random() < shift_prob:
        offset = np.clip(rng.standard_normal(2), -1.0, 1.0) * float(cfg.get("shift_factor", 0.0))
        c = c + offset * s * pixel_std
    return c


def random_augment(
    rng: np.random.Generator,
    center: np.ndarray,
    scale: np.ndarray,
    joints: np.ndarray,
    vis: np.ndarray,
    cfg: dict,
    *,
    image_width: int,
) -> tuple[np.ndarray, np.ndarray, float, bool, np.ndarray, np.ndarray]:
    """HRNet's training augmentation, drawn from ``rng``.

    In order: half-body crop (prob ``half_body_prob`` if more than
    ``num_joints_half_body`` joints are visible; the upper body with prob ``half_body_upper_prob``,
    see :func:`half_body_box`), box shift (prob ``shift_prob``: the centre
    moves by ``clip(randn, -1, 1) * shift_factor`` box sizes per axis, MMPose's
    ``RandomBBoxTransform`` shift; HRNet has none, so it defaults to 0 and then draws nothing),
    scale ``s * clip(randn*sf + 1, 1-sf, 1+sf)``, rotation ``clip(randn*rf, -2rf, 2rf)`` with
    prob ``rot_prob`` (else 0), horizontal flip with prob ``flip_prob`` (0.5) if ``flip``. A flip mirrors the joints
    and the centre about the image (``x -> image_width - 1 - x``) and swaps left/right;
    the caller must crop the mirrored image (or compose :func:`hflip_matrix`).

    Optional cfg keys: ``aspect_ratio`` (input w/h; default ``scale[0]/scale[1]``),
    ``pixel_std`` (200), ``flip_prob`` (0.5).

    Returns ``(center, scale, rotation, flipped, joints, vis)`` (new arrays).
    """
    c = np.array(center, dtype=np.float64, copy=True)
    s = np.array(scale, dtype=np.float64, copy=True)
    j = np.array(joints, dtype=np.float64, copy=True)
    v = np.array(vis, copy=True)
    pixel_std = float(cfg.get("pixel_std", PIXEL_STD))
    aspect = float(cfg.get("aspect_ratio", s[0] / s[1]))

    c, s = _maybe_half_body(rng, c, s, j, v, cfg, aspect, pixel_std)
    c = _maybe_shift(rng, c, s, cfg, pixel_std)

    sf = float(cfg.get("scale_factor", 0.0))
    rf = float(cfg.get("rot_factor", 0.0))
    s = s * float(np.clip(rng.standard_normal() * sf + 1.0, 1.0 - sf, 1.0 + sf))
    rot = 0.0
    if rng.random() < float(cfg.get("rot_prob", 0.6)):
        rot = float(np.clip(rng.standard_normal() * rf, -2.0 * rf, 2.0 * rf))

    flipped = False
    if cfg.get("flip", False) and rng.random() < float(cfg.get("flip_prob", 0.5)):
        flipped = True
        j, v = fliplr_joints(j, v, image_width, cfg.get("flip_pairs", []))
        c[0] = image_width - 1.0 - c[0]
    return c, s, rot, flipped, j, v
