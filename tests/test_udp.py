"""UDP (Huang et al., CVPR 2020) as a training variant: its coordinate convention (box edges onto the
outer pixel CENTRES), its codec (sub-pixel Gaussians, DARK decoding), the run option ``codec: udp``
and a smoke run trained and evaluated end to end."""
from __future__ import annotations

import copy
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pipeline.codecs import convention, gaussian, get_codec
from pipeline.config import load_params, resolve_run, validate_params
from pipeline.data import transforms as T
from pipeline.data.dataset import IMAGENET_MEAN, IMAGENET_STD, TopDownDataset
from pipeline.data.skeleton import COCO
from pipeline.engine import builders, inference
from pipeline.errors import PipelineError

ROOT = Path(__file__).resolve().parent.parent
INPUT, HEATMAP = (96, 128), (24, 32)  # [width, height], stride 4
SIGMA = 2.0
IMG_W, IMG_H = 200, 160


def _boxes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    centers = np.stack([rng.uniform(50, 150, n), rng.uniform(40, 120, n)], -1)
    scales = np.stack([rng.uniform(0.3, 1.5, n), rng.uniform(0.4, 2.0, n)], -1)
    return centers, scales, rng.uniform(-90, 90, n)


# --------------------------------------------------------------------------- (a) the affine convention
def test_udp_box_edges_land_on_the_outer_pixel_centres():
    """Hand case: box x in [50, 150] (sw 0.5) onto W = 64: edges -> 0 and 63 (ours: -0.5 and 63.5)."""
    c, s = [100.0, 80.0], [0.5, 1.0]
    pts = np.array([[50.0, 80.0], [150.0, 80.0], [100.0, -20.0], [100.0, 180.0], [100.0, 80.0]])
    udp = T.affine_points(pts, T.get_affine_matrix(c, s, 0.0, (64, 48), convention="udp"))
    edges = T.affine_points(pts, T.get_affine_matrix(c, s, 0.0, (64, 48)))
    np.testing.assert_allclose(udp, [[0, 23.5], [63, 23.5], [31.5, 0], [31.5, 47], [31.5, 23.5]], atol=1e-12)
    np.testing.assert_allclose(edges, [[-0.5, 23.5], [63.5, 23.5], [31.5, -0.5], [31.5, 47.5], [31.5, 23.5]],
                               atol=1e-12)


def test_udp_corners_of_rotated_boxes_and_the_inverse():
    """The four corners of any rotated box go to (0|W-1, 0|H-1); the inverse matrix undoes the forward one."""
    rng = np.random.default_rng(1)
    for c, s, rot in zip(*_boxes(rng, 20)):
        bw, bh = s * 200.0
        a = np.deg2rad(rot)  # the box is the crop rotated clockwise on screen: p = c + R(rot) (u, v)
        r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        uv = np.array([[-bw / 2, -bh / 2], [bw / 2, -bh / 2], [-bw / 2, bh / 2], [bw / 2, bh / 2]])
        corners = c + uv @ r.T
        want = np.array([[0, 0], [HEATMAP[0] - 1, 0], [0, HEATMAP[1] - 1], [HEATMAP[0] - 1, HEATMAP[1] - 1]])
        got = T.affine_points(corners, T.get_affine_matrix(c, s, rot, HEATMAP, convention="udp"))
        np.testing.assert_allclose(got, want, atol=1e-9)
        back = T.affine_points(got, T.get_affine_matrix(c, s, rot, HEATMAP, inverse=True, convention="udp"))
        np.testing.assert_allclose(back, corners, atol=1e-9)


def test_udp_input_and_heatmap_frames_agree():
    """x_hm = x_in (W_hm - 1) / (W_in - 1) per axis under UDP, x_hm = (x_in + 0.5) / s - 0.5 under ours."""
    rng = np.random.default_rng(2)
    centers, scales, rots = _boxes(rng, 30)
    pts = rng.uniform(-50, 250, (30, 17, 2))
    ratio = (np.array(HEATMAP) - 1.0) / (np.array(INPUT) - 1.0)
    stride = np.array(INPUT) / np.array(HEATMAP)
    for conv, relation in [("udp", lambda p: p * ratio), ("edges", lambda p: (p + 0.5) / stride - 0.5)]:
        hm = T.image_to_heatmap(pts, centers, scales, HEATMAP, rots, convention=conv)
        inp = T.image_to_heatmap(pts, centers, scales, INPUT, rots, convention=conv)
        np.testing.assert_allclose(hm, relation(inp), atol=1e-9)
        np.testing.assert_allclose(T.heatmap_to_image(hm, centers, scales, HEATMAP, rots, convention=conv), pts,
                                   atol=1e-9)


def test_unknown_convention_is_refused():
    with pytest.raises(ValueError, match="unknown coordinate convention 'centres'"):
        T.get_affine_matrix([0, 0], [1, 1], 0.0, HEATMAP, convention="centres")


# --------------------------------------------------------------------------- the codec
def test_udp_targets_are_gaussians_at_the_exact_position():
    """Hand formula: exp(-d^2 / 2 sigma^2) about the joint itself inside the 3-sigma square about its nearest
    pixel centre, zero outside; the default codec centres the same square's Gaussian on that pixel centre."""
    kp = np.array([[10.3, 7.8], [4.5, 20.49]])
    t, w = get_codec("udp", sigma=SIGMA).encode(kp, np.ones(2), HEATMAP, SIGMA)
    ys, xs = np.mgrid[0:HEATMAP[1], 0:HEATMAP[0]]
    for k, (x, y) in enumerate(kp):
        mx, my = np.floor(x + 0.5), np.floor(y + 0.5)
        window = (np.abs(xs - mx) <= 3 * SIGMA) & (np.abs(ys - my) <= 3 * SIGMA)
        want = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * SIGMA ** 2)) * window
        np.testing.assert_allclose(t[k], want, atol=1e-7)
        rounded = np.exp(-((xs - mx) ** 2 + (ys - my) ** 2) / (2 * SIGMA ** 2)) * window
        np.testing.assert_allclose(gaussian.encode(kp, np.ones(2), HEATMAP, SIGMA)[0][k], rounded, atol=1e-7)
    np.testing.assert_array_equal(w, [1, 1])


def test_udp_codec_needs_sigma_and_names_its_convention():
    with pytest.raises(PipelineError, match="decodes with the training sigma"):
        get_codec("udp")
    assert get_codec("udp", sigma=2.0).name == "udp"
    assert convention("udp") == "udp" and convention("gaussian") == "edges" and convention("hdm") == "edges"


# --------------------------------------------------------------------------- the dataset
def _image(path: Path, points: np.ndarray | None = None) -> str:
    """A BGR PNG: black, or with a small red blob at each of ``points`` (image px)."""
    img = np.zeros((IMG_H, IMG_W, 3), np.uint8)
    if points is not None:
        yy, xx = np.mgrid[0:IMG_H, 0:IMG_W]
        blob = sum(np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 3.0 ** 2)) for x, y in points)
        img[..., 2] = (np.clip(blob, 0, 1) * 255).round().astype(np.uint8)
    cv2.imwrite(str(path), img)
    return str(path)


def _record(path: str, joints: np.ndarray, box=(60.0, 25.0, 80.0, 110.0)) -> dict:
    c, s = T.box_to_center_scale(box, INPUT[0] / INPUT[1])
    return {"image_path": path, "image_id": 1, "center": c, "scale": s, "joints": joints,
            "vis": np.full(len(joints), 2.0), "box_score": 1.0, "area": 1.0}


def _dataset(recs: list[dict], codec: str, train: bool = False, **aug) -> TopDownDataset:
    return TopDownDataset(recs, joint_set=COCO, input_size=INPUT, heatmap_size=HEATMAP, codec=codec, sigma=SIGMA,
                          train=train, aug_cfg=aug or None)


NO_AUG = {"scale_factor": 0.0, "rot_prob": 0.0, "half_body_prob": 0.0, "flip": False}


def test_udp_round_trip_through_the_dataset_and_codec(tmp_path):
    """Random sub-pixel joints, encoded by the udp dataset, decoded by the udp codec and mapped back with the
    udp inverse, come back within 1e-3 heatmap px. DARK on these Gaussians measures ≤ 2e-4 heatmap px
    (sigma 1-3, ≥ 4 sigma from the border: the modulation's zero padding is what moves points near it), so
    1e-3 has a margin of 5 and stays far below the default codec's rounding of the centre (up to 0.5 px),
    which this check must and does catch."""
    rng = np.random.default_rng(3)
    path = _image(tmp_path / "black.png")
    recs = []
    for _ in range(6):  # joints drawn in the heatmap frame, ≥ 4 sigma + 2 from its border, then into the image
        c, s = T.box_to_center_scale([rng.uniform(30, 80), rng.uniform(20, 40), rng.uniform(50, 100),
                                      rng.uniform(80, 120)], INPUT[0] / INPUT[1])
        m = 4 * SIGMA + 2
        hm = np.stack([rng.uniform(m, HEATMAP[0] - 1 - m, 17), rng.uniform(m, HEATMAP[1] - 1 - m, 17)], -1)
        joints = T.heatmap_to_image(hm[None], c[None], s[None], HEATMAP, convention="udp")[0]
        recs.append({**_record(path, joints), "center": c, "scale": s})
    codec = get_codec("udp", sigma=SIGMA)
    for aug, train in [(NO_AUG, False), ({**NO_AUG, "rot_prob": 1.0, "rot_factor": 30.0, "scale_factor": 0.2}, True)]:
        ds = _dataset(recs, "udp", train=train, **aug)
        for i, rec in enumerate(recs):
            item = ds[i]
            xy, _ = codec.decode(item["target"].numpy()[None])
            kp = item["keypoints"].numpy().astype(np.float64)
            assert np.abs(xy[0] - kp).max() < 1e-3  # heatmap px (float32 keypoints: ~1e-6)
            back = T.heatmap_to_image(xy, item["center"].numpy()[None], item["scale"].numpy()[None], HEATMAP,
                                      item["rotation"].numpy()[None], convention="udp")[0]
            px_per_hm = item["scale"].numpy().max() * 200.0 / (HEATMAP[0] - 1)
            assert np.abs(back - rec["joints"]).max() < 1e-3 * px_per_hm + 1e-4
            assert item["weight"].numpy().min() == 1.0
            if not train:  # the default codec on the same heatmap positions: its rounded centres fail the check
                xy_g, _ = codec.decode(gaussian.encode(kp, np.ones(17), HEATMAP, SIGMA)[0][None])
                assert np.abs(xy_g[0] - kp).max() > 0.1


def test_udp_crop_content_follows_the_keypoints(tmp_path):
    """Independent of the matrices: the centroid of a blob drawn at a joint, found in the warped input crop,
    sits at x_in = x_hm (W_in - 1) / (W_hm - 1) under any augmentation."""
    nose = np.array([80.4, 55.7])  # away from the crop centre, where the two relations agree
    joints = np.zeros((17, 2))
    joints[0] = nose
    rec = _record(_image(tmp_path / "blob.png", [nose]), joints)
    rec["vis"] = np.zeros(17)
    rec["vis"][0] = 2
    ds = _dataset([rec], "udp", train=True, half_body_prob=0.0, scale_factor=0.1, rot_factor=10.0)
    ratio = (np.array(INPUT) - 1.0) / (np.array(HEATMAP) - 1.0)
    flips = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        item = ds[0]
        red = np.clip(item["image"][0].numpy() * IMAGENET_STD[0] + IMAGENET_MEAN[0] - 1e-6, 0, None)
        ys, xs = np.mgrid[0:red.shape[0], 0:red.shape[1]]
        cen = np.array([(red * xs).sum(), (red * ys).sum()]) / red.sum()
        np.testing.assert_allclose(cen, item["keypoints"].numpy()[0] * ratio, atol=0.05)  # measured ≤ 0.02
        # the other convention's relation (x_in = 4 x_hm + 1.5) misses by ≥ 0.3 input px here: the check
        # can tell them apart
        assert np.abs(cen - (item["keypoints"].numpy()[0] * 4 + 1.5)).max() > 0.3
        flips.add(bool(item["flipped"]))
    assert flips == {True, False}


def test_udp_flip_mirrors_the_heatmap_keypoints(tmp_path):
    """A mirrored crop's heatmap keypoints are x -> W - 1 - x of the plain crop's, left/right swapped, and its
    image is the plain crop mirrored: the flip test needs no pixel shift under UDP either."""
    rng = np.random.default_rng(4)
    joints = np.stack([rng.uniform(70, 130, 17), rng.uniform(35, 125, 17)], -1)
    rec = _record(_image(tmp_path / "blobs.png", joints[:3]), joints)
    plain = _dataset([rec], "udp", train=True, **NO_AUG)[0]
    mirrored = _dataset([rec], "udp", train=True, **{**NO_AUG, "flip": True, "flip_prob": 1.0})[0]
    assert bool(mirrored["flipped"]) and not bool(plain["flipped"])
    perm = T.flip_permutation(17, COCO.flip_pairs)
    want = plain["keypoints"].numpy()[perm].astype(np.float64)
    want[:, 0] = HEATMAP[0] - 1 - want[:, 0]
    np.testing.assert_allclose(mirrored["keypoints"].numpy(), want, atol=1e-4)
    np.testing.assert_allclose(mirrored["target"].numpy(), plain["target"].numpy()[perm][..., ::-1], atol=1e-5)
    np.testing.assert_allclose(mirrored["image"].numpy(), plain["image"].numpy()[..., ::-1], atol=0.05)


def test_udp_weight_is_the_input_crop():
    """Half an input pixel past the outer heatmap pixel centres: 0.5 (W_hm - 1) / (W_in - 1) heatmap px."""
    ds = _dataset([], "udp")
    np.testing.assert_allclose(ds.crop_margin(), [0.5 * 23 / 95, 0.5 * 31 / 127])
    assert _dataset([], "gaussian").crop_margin() == (0.5, 0.5)


# --------------------------------------------------------------------------- (c) the size of mixing the two
def test_decoding_udp_heatmaps_with_our_inverse_misplaces_by_the_hand_computed_amount():
    """x_udp - x_edges = (x_hm - (W-1)/2) bw (1/(W-1) - 1/W): bw / 2W at the box edges, 0 at the centre.
    Hand numbers for bw = 200 px (sw 1), W = 24: 200 / 48 = 4.1667 px at x_hm = 23, -4.1667 at 0."""
    c, s = np.array([[100.0, 80.0]]), np.array([[1.0, 1.5]])
    xs = np.array([0.0, 5.5, 11.5, 17.0, 23.0])
    pts = np.stack([xs, np.full(5, 15.5)], -1)[None]
    udp = T.heatmap_to_image(pts, c, s, HEATMAP, convention="udp")[0]
    ours = T.heatmap_to_image(pts, c, s, HEATMAP)[0]
    want = (xs - 11.5) * 200.0 * (1 / 23 - 1 / 24)
    np.testing.assert_allclose(udp[:, 0] - ours[:, 0], want, atol=1e-12)
    np.testing.assert_allclose((udp - ours)[[0, 2, 4], 0], [-200 / 48, 0.0, 200 / 48], atol=1e-12)
    np.testing.assert_allclose(udp[:, 1] - ours[:, 1], 0.0, atol=1e-12)  # y = (H-1)/2: the centre row


# --------------------------------------------------------------------------- config and inference
@pytest.fixture(scope="module")
def params():
    return load_params(ROOT / "params.yaml")


def test_runs_resolve_with_the_codec_only_where_set(params):
    udp = resolve_run(params, "coco_hrnet_w32_udp", "paper")
    mse = resolve_run(params, "coco_hrnet_w32_mse", "paper")
    assert udp["codec"] == "udp" and "codec" not in mse
    assert {k: v for k, v in udp.items() if k not in ("name", "codec")} == {k: v for k, v in mse.items() if k != "name"}
    assert builders.codec_name(udp) == "udp" and builders.convention(udp) == "udp"
    assert builders.codec_name(mse) == "gaussian" and builders.convention(mse) == "edges"
    assert builders.codec_name(resolve_run(params, "coco_hrnet_w48_hdm", "paper")) == "hdm"
    assert builders.eval_variants(udp) == {} and list(builders.eval_variants(mse)) == ["dark"]
    names = list(params["runs"])
    assert names[names.index("coco_hrnet_w48_hdm") + 1:][:2] == ["coco_hrnet_w32_udp", "coco_hrnet_w48_udp"]


@pytest.mark.parametrize("codec, loss, where, what", [
    ("udp", "hdm", "runs.bad.codec", "'udp' needs loss: mse"),
    ("dark", "mse", "runs.bad.codec", "'dark' is not one of ['udp']"),
])
def test_a_bad_codec_is_one_line_naming_the_key(params, codec, loss, where, what):
    bad = copy.deepcopy(params)
    bad["runs"]["bad"] = {"dataset": "coco", "arch": "hrnet_w32", "loss": loss, "codec": codec}
    with pytest.raises(PipelineError) as err:
        validate_params(bad)
    assert err.value.where == f"params.yaml: {where}" and what in err.value.what
    assert "\n" not in str(err.value)


def test_predict_maps_udp_heatmaps_back_with_the_udp_inverse(monkeypatch):
    """Inference of a udp run: DARK on the run's heatmaps, then UDP's inverse (not ours, which would miss by
    up to bw / 2W), flip test without a shift."""
    from test_dark_eval import FixedHeatmaps, _items

    w, h = 48, 64
    rng = np.random.default_rng(5)
    pts = np.stack([rng.uniform(8, w - 9, 17), rng.uniform(8, h - 9, 17)], -1)
    pts[0] = [w - 9, h - 9]  # far from the centre: the conventions differ by (x - 23.5) bw (1/47 - 1/48)
    ys, xs = np.mgrid[0:h, 0:w]
    heat = np.exp(-((xs - pts[:, 0, None, None]) ** 2 + (ys - pts[:, 1, None, None]) ** 2) / (2 * SIGMA ** 2))
    monkeypatch.setattr(builders, "dataset", lambda cfg, recs, train: _items(3))
    cfg = {"dataset": "coco", "loss": "mse", "codec": "udp", "train": {"workers": 0},
           "data": {"heatmap_size": [w, h], "sigma": SIGMA, "input_size": [192, 256]}}
    pred = inference.predict(FixedHeatmaps(heat), cfg, [], flip_test=False, dev=torch.device("cpu"), batch_size=2,
                             variants=builders.eval_variants(cfg))
    truth = T.heatmap_to_image(np.broadcast_to(pts, (3, 17, 2)), pred["center"], pred["scale"], [w, h],
                               convention="udp")
    edges = T.heatmap_to_image(np.broadcast_to(pts, (3, 17, 2)), pred["center"], pred["scale"], [w, h])
    px = 1.6 * 200 / (h - 1)  # image px per heatmap px (y, the larger)
    assert np.abs(pred["coords"] - truth).max() < 1e-3 * px
    assert np.abs(edges - truth).max() > 0.3 * px and pred["variants"] == {}


# --------------------------------------------------------------------------- (e) a smoke run end to end
@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke COCO data and an MLflow store in a scratch folder (cwd while the test runs)."""
    from pipeline.data.prepare import prepare_dataset
    from pipeline.tracking import init_store

    d = tmp_path_factory.mktemp("udp_smoke")
    p = load_params(ROOT / "params.yaml", "smoke")
    uri = f"sqlite:///{d / 'store' / 'mlflow.db'}"
    (d / "pretrained").symlink_to(ROOT / "pretrained")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        prepare_dataset(p, "smoke", "coco", progress=False)
        init_store(uri, "hdm-benchmark-smoke")
        yield d, p, uri


def test_smoke_udp_run_trains_and_evaluates(smoke):
    import mlflow

    from pipeline.engine.evaluate import evaluate_run
    from pipeline.engine.train import train_run

    d, p, uri = smoke
    cfg = resolve_run(p, "coco_hrnet_w32_udp", "smoke")
    cfg["train"]["epochs"] = 1
    ckpt = torch.load(train_run(cfg, tracking_uri=uri, experiment="hdm-benchmark-smoke", progress=False),
                      map_location="cpu", weights_only=True)
    result = evaluate_run(cfg, tracking_uri=uri, experiment="hdm-benchmark-smoke", progress=False)
    metrics = result["metrics"]
    assert 0.0 <= metrics["coco_val/AP"] <= 1.0 and "coco_val_dark/AP" not in metrics
    mlflow.set_tracking_uri(uri)
    run = mlflow.tracking.MlflowClient().get_run(ckpt["mlflow_run_id"])
    assert run.data.params["codec"] == "udp" and run.data.params["loss"] == "mse"
    assert run.data.tags["evaluated"] == "true"
