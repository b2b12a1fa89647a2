"""Crop geometry and augmentation: docs/conventions.md, checked numerically."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.data import transforms as T
from pipeline.data.skeleton import COCO


def blob_image(h: int, w: int, x0: float, y0: float, sigma: float = 3.0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2))


def centroid(img: np.ndarray) -> np.ndarray:
    img = img.astype(np.float64)
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    m = img.sum()
    return np.array([(img * xx).sum() / m, (img * yy).sum() / m])


def test_box_to_center_scale_matches_hrnet():
    c, s = T.box_to_center_scale([10, 20, 100, 50], aspect_ratio=0.75)
    np.testing.assert_allclose(c, [60, 45])
    np.testing.assert_allclose(s, np.array([100 / 200, (100 / 0.75) / 200]) * 1.25)
    c, s = T.box_to_center_scale([0, 0, 30, 120], aspect_ratio=0.75, padding=1.0)
    np.testing.assert_allclose(s, [90 / 200, 120 / 200])  # width expanded, never shrunk


def test_box_edges_map_to_output_pixel_edges():
    center, scale, size = np.array([150.0, 80.0]), np.array([0.6, 0.8]), (96, 128)
    m = T.get_affine_matrix(center, scale, 0.0, size)
    half = scale * 200 / 2
    corners = np.array([center - half, center + half])
    np.testing.assert_allclose(T.affine_points(corners, m), [[-0.5, -0.5], [95.5, 127.5]], atol=1e-9)
    # the documented formula
    p = np.array([[123.4, 56.7]])
    expect = (p - center) * np.array(size) / (scale * 200) + (np.array(size) - 1) / 2
    np.testing.assert_allclose(T.affine_points(p, m), expect, atol=1e-9)


def test_inverse_round_trip_with_rotation():
    rng = np.random.default_rng(0)
    for _ in range(20):
        c = rng.uniform(0, 500, 2)
        s = rng.uniform(0.2, 2.0, 2)
        r = rng.uniform(-90, 90)
        m = T.get_affine_matrix(c, s, r, (192, 256))
        mi = T.get_affine_matrix(c, s, r, (192, 256), inverse=True)
        pts = rng.uniform(-100, 600, (10, 2))
        np.testing.assert_allclose(T.affine_points(T.affine_points(pts, m), mi), pts, atol=1e-6)
        np.testing.assert_allclose(T.compose(m, mi), [[1, 0, 0], [0, 1, 0]], atol=1e-9)


def test_crop_of_bright_pixel_is_exact_for_integer_translation():
    img = np.zeros((120, 200), np.uint8)
    img[37, 111] = 255
    # magnification 1 (box 64 px wide / 64 px output) and integer offset: an exact copy
    center, scale = np.array([100.5, 60.5]), np.array([64 / 200, 48 / 200])
    out = T.crop(img, center, scale, 0.0, (64, 48))
    m = T.get_affine_matrix(center, scale, 0.0, (64, 48))
    x, y = T.affine_points([[111, 37]], m)[0]
    assert (x, y) == (111 - 69, 37 - 37)
    assert out[int(y), int(x)] == 255 and out.sum() == 255


@pytest.mark.parametrize("rot", [0.0, 30.0, -70.0])
def test_crop_puts_blob_where_affine_points_says(rot):
    x0, y0 = 131.3, 77.8
    img = (blob_image(180, 260, x0, y0, sigma=4.0) * 255).astype(np.float32)
    center, scale, size = np.array([120.0, 90.0]), np.array([0.6, 0.8]), (96, 128)
    out = T.crop(img, center, scale, rot, size)
    expect = T.affine_points([[x0, y0]], T.get_affine_matrix(center, scale, rot, size))[0]
    np.testing.assert_allclose(centroid(out), expect, atol=0.05)


def test_rotation_sign_counter_clockwise():
    center, scale, size = np.array([100.0, 100.0]), np.array([1.0, 1.0]), (200, 200)
    m = T.get_affine_matrix(center, scale, 90.0, size)
    # straight above the centre in the image -> straight left of the output centre
    np.testing.assert_allclose(T.affine_points([[100, 60]], m), [[99.5 - 40, 99.5]], atol=1e-9)
    # small positive angle: a point above the centre moves left (counter-clockwise on screen)
    m = T.get_affine_matrix(center, scale, 10.0, size)
    x, y = T.affine_points([[100, 60]], m)[0]
    assert x < 99.5 and y < 99.5
    # the image content follows the points
    img = (blob_image(200, 200, 100, 60) * 255).astype(np.float32)
    out = T.crop(img, center, scale, 90.0, size)
    np.testing.assert_allclose(centroid(out), [59.5, 99.5], atol=0.05)


def test_input_and_heatmap_frames_are_consistent():
    rng = np.random.default_rng(1)
    c, s, r = np.array([300.0, 200.0]), np.array([1.1, 1.4]), 25.0
    inp, hm = (192, 256), (48, 64)
    stride = inp[0] / hm[0]
    pts = rng.uniform(0, 600, (50, 2))
    p_in = T.affine_points(pts, T.get_affine_matrix(c, s, r, inp))
    p_hm = T.affine_points(pts, T.get_affine_matrix(c, s, r, hm))
    np.testing.assert_allclose(p_hm, (p_in + 0.5) / stride - 0.5, atol=1e-9)


def test_heatmap_to_image_inverts_image_to_heatmap():
    rng = np.random.default_rng(2)
    centers = rng.uniform(50, 400, (3, 2))
    scales = rng.uniform(0.3, 1.5, (3, 2))
    pts = rng.uniform(0, 500, (3, 17, 2))
    hm = T.image_to_heatmap(pts, centers, scales, (48, 64))
    np.testing.assert_allclose(T.heatmap_to_image(hm, centers, scales, (48, 64)), pts, atol=1e-9)
    # per-person matches the single-matrix helper
    m = T.get_affine_matrix(centers[1], scales[1], 0.0, (48, 64))
    np.testing.assert_allclose(hm[1], T.affine_points(pts[1], m), atol=1e-9)


def test_mirrored_image_crop_equals_mirrored_crop():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, (90, 140, 3), dtype=np.uint8)
    c, s, size = np.array([63.2, 41.7]), np.array([0.4, 0.5]), (48, 64)
    plain = T.crop(img, c, s, 0.0, size)
    c_m = np.array([140 - 1 - c[0], c[1]])
    mirrored = T.crop(cv2.flip(img, 1), c_m, s, 0.0, size)
    assert np.abs(mirrored.astype(int) - plain[:, ::-1].astype(int)).max() <= 1
    # composing the mirror into the matrix is the same as mirroring the image
    composed = T.warp(img, T.compose(T.get_affine_matrix(c_m, s, 17.0, size), T.hflip_matrix(140)), size)
    direct = T.crop(cv2.flip(img, 1), c_m, s, 17.0, size)
    assert np.abs(composed.astype(int) - direct.astype(int)).max() <= 1


def _person(rng):
    joints = rng.uniform(50, 250, (17, 2))
    vis = np.ones(17)
    return np.array([150.0, 150.0]), np.array([1.0, 4 / 3]), joints, vis


def test_random_augment_is_deterministic_and_in_range():
    cfg = T.default_aug_cfg(COCO, half_body_prob=0.0)
    c, s, j, v = _person(np.random.default_rng(4))
    a = T.random_augment(np.random.default_rng(7), c, s, j, v, cfg, image_width=300)
    b = T.random_augment(np.random.default_rng(7), c, s, j, v, cfg, image_width=300)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    for seed in range(30):
        c2, s2, r, flipped, j2, v2 = T.random_augment(
            np.random.default_rng(seed), c, s, j, v, cfg, image_width=300)
        ratio = s2 / s
        assert np.isclose(ratio[0], ratio[1]) and 0.65 - 1e-12 <= ratio[0] <= 1.35 + 1e-12
        assert abs(r) <= 90
        assert np.isclose(c2[0], 299 - c[0]) if flipped else np.isclose(c2[0], c[0])
    np.testing.assert_array_equal(c, [150.0, 150.0])  # inputs untouched


def test_random_augment_flip_mirrors_and_swaps():
    cfg = T.default_aug_cfg(COCO, half_body_prob=0.0, scale_factor=0.0, rot_prob=0.0, flip_prob=1.0)
    c, s, j, v = _person(np.random.default_rng(5))
    v[3] = 0
    c2, s2, r, flipped, j2, v2 = T.random_augment(np.random.default_rng(0), c, s, j, v, cfg, image_width=300)
    assert flipped and r == 0.0
    np.testing.assert_allclose(s2, s)
    perm = COCO.flip_index()
    np.testing.assert_allclose(j2[:, 0], 299 - j[perm, 0])
    np.testing.assert_allclose(j2[:, 1], j[perm, 1])
    assert v2[4] == 0 and v2[3] == 1


def test_random_augment_box_shift_is_bounded_and_off_by_default():
    """MMPose-style box shift: the centre moves by at most shift_factor box sizes per axis; the
    joints, scale and rotation are untouched; with shift_prob 0 (HRNet) nothing is drawn."""
    cfg = T.default_aug_cfg(COCO, half_body_prob=0.0, scale_factor=0.0, rot_prob=0.0, flip=False,
                            shift_factor=0.1, shift_prob=1.0)
    c, s, j, v = _person(np.random.default_rng(7))
    offsets = []
    for seed in range(50):
        c2, s2, r, flipped, j2, _ = T.random_augment(np.random.default_rng(seed), c, s, j, v, cfg,
                                                     image_width=300)
        np.testing.assert_allclose(s2, s)
        np.testing.assert_allclose(j2, j)
        assert r == 0.0 and not flipped
        offsets.append((c2 - c) / (s * 200))
    offsets = np.array(offsets)
    assert np.all(np.abs(offsets) <= 0.1 + 1e-12)
    assert np.abs(offsets).max() > 0.05 and np.all(np.abs(offsets).sum(1) > 0)
    assert offsets[:, 0].min() < 0 < offsets[:, 0].max() and offsets[:, 1].min() < 0 < offsets[:, 1].max()
    # shift_prob 0: the same draws (and results) as a config without the shift keys
    plain = T.default_aug_cfg(COCO, half_body_prob=0.0)
    off = dict(plain, shift_factor=0.1, shift_prob=0.0)
    a = T.random_augment(np.random.default_rng(3), c, s, j, v, plain, image_width=300)
    b = T.random_augment(np.random.default_rng(3), c, s, j, v, off, image_width=300)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_half_body_box():
    cfg = T.default_aug_cfg(COCO, half_body_prob=1.0, scale_factor=0.0, rot_prob=0.0, flip=False,
                            aspect_ratio=0.75)
    c, s, j, v = _person(np.random.default_rng(6))
    upper, lower = j[:11], j[11:]
    seen = set()
    for seed in range(20):
        c2, s2, *_ = T.random_augment(np.random.default_rng(seed), c, s, j, v, cfg, image_width=300)
        part = upper if np.allclose(c2, upper.mean(0)) else lower
        np.testing.assert_allclose(c2, part.mean(0))
        w, h = part.max(0) - part.min(0)
        w, h = max(w, 0.75 * h), max(h, w / 0.75)
        np.testing.assert_allclose(s2, np.array([w, h]) / 200 * 1.5)
        seen.add(len(part))
    assert seen == {11, 6}
    # too few visible joints: no half-body box
    v_few = np.zeros(17)
    v_few[:8] = 1
    c3, s3, *_ = T.random_augment(np.random.default_rng(0), c, s, j, v_few, cfg, image_width=300)
    np.testing.assert_allclose(c3, c)


def _upper_share(cfg: dict, n: int = 3000) -> float:
    """How often the half-body crop of a fully visible person keeps the upper body."""
    c, s, j, v = _person(np.random.default_rng(6))
    upper = j[:11].mean(0)
    hits = 0
    for seed in range(n):
        c2, *_ = T.random_augment(np.random.default_rng(seed), c, s, j, v, cfg, image_width=300)
        hits += bool(np.allclose(c2, upper))
    return hits / n


def test_half_body_keeps_the_upper_body_as_often_as_the_reference_draw():
    """HRNet and HRFormer pick the upper body when ``np.random.randn() < 0.5``; the default
    half_body_upper_prob reproduces that draw's frequency (≈ 0.69), and the config value is what
    decides (0.5 gives half). Binomial standard error at n = 3000: < 0.01; tolerance 0.03."""
    reference = float(np.mean(np.random.default_rng(0).standard_normal(200_000) < 0.5))
    assert T.HALF_BODY_UPPER_PROB == pytest.approx(reference, abs=0.005)
    base = dict(half_body_prob=1.0, scale_factor=0.0, rot_prob=0.0, flip=False, aspect_ratio=0.75)
    assert T.default_aug_cfg(COCO)["half_body_upper_prob"] == T.HALF_BODY_UPPER_PROB
    assert _upper_share(T.default_aug_cfg(COCO, **base)) == pytest.approx(reference, abs=0.03)
    assert _upper_share(T.default_aug_cfg(COCO, half_body_upper_prob=0.5, **base)) == pytest.approx(0.5, abs=0.03)
    assert _upper_share(T.default_aug_cfg(COCO, half_body_upper_prob=0.0, **base), n=50) == 0.0


def _box_records(n: int) -> list[dict]:
    rng = np.random.default_rng(1)
    recs = []
    for i in range(n):
        x, y, w, h = rng.uniform(0, 100), rng.uniform(0, 100), rng.uniform(10, 80), rng.uniform(10, 150)
        c, s = T.box_to_center_scale([x, y, w, h], 0.75)
        recs.append({"center": c, "scale": s, "box": [x, y, w, h], "image_id": i})
    return recs


def test_load_time_box_shift_is_hrformers_xywh2cs():
    """HRFormer's dataset (MMPose 0.x ``_xywh2cs``): per training box, in order,
    ``if rand() < 0.3: center += 0.4 * (rand(2) - 0.5) * [w, h]``; the scale is untouched. Our
    draw with prob 0.3, factor 0.2 gives the same centres from the same generator."""
    recs = _box_records(400)
    ours = T.shift_box_centers(recs, np.random.default_rng(5), prob=0.3, factor=0.2)
    g = np.random.default_rng(5)
    shifted = 0
    for rec, out in zip(recs, ours):
        center = np.array(rec["center"], dtype=np.float64)
        if g.random() < 0.3:  # the reference's expression, transcribed
            center += 0.4 * (g.random(2) - 0.5) * np.array(rec["box"][2:])
            shifted += 1
        np.testing.assert_allclose(out["center"], center, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(out["scale"], rec["scale"])
        offset = np.abs(out["center"] - rec["center"]) / np.array(rec["box"][2:])
        assert np.all(offset <= 0.2 + 1e-12)
    assert 0.22 < shifted / len(recs) < 0.38  # 30 % (standard error 2.3 %)
    for rec, fresh in zip(recs, _box_records(400)):  # the input records are not modified
        np.testing.assert_array_equal(rec["center"], fresh["center"])
    # prob 0: no record moves
    same = T.shift_box_centers(recs, np.random.default_rng(5), prob=0.0, factor=0.2)
    for rec, out in zip(recs, same):
        np.testing.assert_array_equal(out["center"], rec["center"])
