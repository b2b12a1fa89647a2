"""COCO/MPII readers and TopDownDataset on small hand-written files."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from pipeline.data import transforms as T
from pipeline.data.coco import load_coco_people, load_image_ids
from pipeline.data.dataset import IMAGENET_MEAN, IMAGENET_STD, TopDownDataset, collate
from pipeline.data.mpii import load_mpii_people
from pipeline.data.skeleton import COCO, MPII
from pipeline.errors import PipelineError

INPUT, HEATMAP = (96, 128), (24, 32)
ASPECT = INPUT[0] / INPUT[1]


def _kps(rng, box, labelled):
    x, y, w, h = box
    kp = np.zeros((17, 3))
    kp[:, 0] = rng.uniform(x + 2, x + w - 2, 17).round(1)
    kp[:, 1] = rng.uniform(y + 2, y + h - 2, 17).round(1)
    kp[:, 2] = 2
    kp[labelled:] = 0
    kp[1, 2] = 1  # labelled but occluded
    return kp.reshape(-1).tolist()


@pytest.fixture()
def coco(tmp_path):
    rng = np.random.default_rng(0)
    img_dir = tmp_path / "images" / "val2017"
    img_dir.mkdir(parents=True)
    images = [
        {"id": 1, "file_name": "000000000001.jpg", "width": 200, "height": 160},
        {"id": 2, "file_name": "000000000002.jpg", "width": 180, "height": 150},
    ]
    for im in images:
        cv2.imwrite(str(img_dir / im["file_name"]), rng.integers(0, 255, (im["height"], im["width"], 3), dtype=np.uint8))
    anns = [
        {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [40, 30, 60, 100],
         "area": 4000.0, "num_keypoints": 12, "keypoints": _kps(rng, [40, 30, 60, 100], 12)},
        {"id": 12, "image_id": 1, "category_id": 1, "iscrowd": 1, "bbox": [0, 0, 50, 50],
         "area": 900.0, "num_keypoints": 0, "keypoints": [0] * 51},
        {"id": 13, "image_id": 2, "category_id": 1, "iscrowd": 0, "bbox": [10, 10, 30, 30],
         "area": 500.0, "num_keypoints": 0, "keypoints": [0] * 51},
        {"id": 14, "image_id": 2, "category_id": 1, "iscrowd": 0, "bbox": [-10.5, 100, 80, 70],
         "area": 3000.0, "num_keypoints": 17, "keypoints": _kps(rng, [2, 102, 60, 46], 17)},
    ]
    ann_file = tmp_path / "annotations" / "person_keypoints_val2017.json"
    ann_file.parent.mkdir()
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1}]}))
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [30, 20, 80, 120], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.05},
        {"image_id": 2, "category_id": 2, "bbox": [0, 0, 10, 10], "score": 0.99},
        {"image_id": 99, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.99},
    ]
    det_file = tmp_path / "person_detection_results" / "dets.json"
    det_file.parent.mkdir()
    det_file.write_text(json.dumps(dets))
    return {"ann": ann_file, "dir": img_dir, "det": det_file, "anns": anns, "tmp": tmp_path}


def test_coco_gt_records(coco):
    recs = load_coco_people(coco["ann"], coco["dir"], aspect_ratio=ASPECT)
    assert [r["ann_id"] for r in recs] == [11, 14]  # crowd and keypoint-less skipped
    r = recs[0]
    assert r["image_path"] == str(coco["dir"] / "000000000001.jpg") and r["image_id"] == 1
    kp = np.asarray(coco["anns"][0]["keypoints"]).reshape(17, 3)
    np.testing.assert_array_equal(r["vis"], (kp[:, 2] > 0).astype(float))
    np.testing.assert_allclose(r["joints"], kp[:, :2])
    # HRNet's box cleaning: x2 = x1 + max(0, w - 1)
    c, s = T.box_to_center_scale([40, 30, 59, 99], ASPECT)
    np.testing.assert_allclose(r["center"], c)
    np.testing.assert_allclose(r["scale"], s)
    assert r["box_score"] == 1.0 and r["area"] == 4000.0
    # clipped at the left image border; HRNet measures x2 from the clipped x1 (x1 + w - 1)
    c, s = T.box_to_center_scale([0, 100, 79, 49], ASPECT)
    np.testing.assert_allclose(recs[1]["center"], c)
    np.testing.assert_allclose(recs[1]["scale"], s)
    assert load_image_ids(coco["ann"]) == [1, 2]


def test_coco_detection_records(coco):
    recs = load_coco_people(coco["ann"], coco["dir"], aspect_ratio=ASPECT, use_gt_boxes=False,
                            det_file=coco["det"], image_thre=0.1)
    assert len(recs) == 1
    r = recs[0]
    c, s = T.box_to_center_scale([30, 20, 80, 120], ASPECT)
    np.testing.assert_allclose(r["center"], c)
    np.testing.assert_allclose(r["scale"], s)
    assert r["box_score"] == 0.9 and r["area"] == 9600 and not r["vis"].any()
    assert len(load_coco_people(coco["ann"], coco["dir"], aspect_ratio=ASPECT, use_gt_boxes=False,
                                det_file=coco["det"])) == 2


def _expect_error(fn, *fragments):
    with pytest.raises(PipelineError) as info:
        fn()
    for f in fragments:
        assert str(f) in str(info.value)


def test_coco_errors(coco):
    tmp = coco["tmp"]
    missing = tmp / "nope.json"
    _expect_error(lambda: load_coco_people(missing, coco["dir"], aspect_ratio=ASPECT), "nope.json")
    bad = tmp / "bad.json"
    bad.write_text("{not json")
    _expect_error(lambda: load_coco_people(bad, coco["dir"], aspect_ratio=ASPECT), "bad.json", "JSON")
    data = json.loads(coco["ann"].read_text())

    def broken(change, name):
        d = json.loads(json.dumps(data))
        change(d)
        p = tmp / name
        p.write_text(json.dumps(d))
        return p

    p = broken(lambda d: d["annotations"][0].update(id=77, keypoints=[0] * 50), "kp.json")
    _expect_error(lambda: load_coco_people(p, coco["dir"], aspect_ratio=ASPECT), "kp.json", "77", "keypoints")
    p = broken(lambda d: d["annotations"][3].update(bbox=[1, 2, 3]), "bbox.json")
    _expect_error(lambda: load_coco_people(p, coco["dir"], aspect_ratio=ASPECT), "bbox.json", "14", "bbox")
    p = broken(lambda d: d["annotations"][0].update(image_id=5), "img.json")
    _expect_error(lambda: load_coco_people(p, coco["dir"], aspect_ratio=ASPECT), "img.json", "11", "image")
    p = broken(lambda d: d.pop("annotations"), "noann.json")
    _expect_error(lambda: load_coco_people(p, coco["dir"], aspect_ratio=ASPECT), "noann.json")
    _expect_error(lambda: load_coco_people(coco["ann"], coco["dir"], aspect_ratio=ASPECT, use_gt_boxes=False,
                                           det_file=tmp / "dets_missing.json"), "dets_missing.json")


def _mpii_entry(rng, name):
    joints = rng.uniform(20, 180, (16, 2)).round(1)
    vis = np.ones(16)
    vis[[6, 9]] = 0
    return {"image": name, "center": [100.0, 90.0], "scale": 0.6,
            "joints": joints.tolist(), "joints_vis": vis.tolist()}


def test_mpii_records_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    entries = [_mpii_entry(rng, "015601864.jpg"), _mpii_entry(rng, "abc.jpg")]
    entries[1]["center"] = [-1.0, -1.0]
    f = tmp_path / "valid.json"
    f.write_text(json.dumps(entries))
    recs = load_mpii_people(f, tmp_path / "images")
    r = recs[0]
    assert r["image_id"] == 15601864 and recs[1]["image_id"] == 1
    np.testing.assert_allclose(r["center"], [100 - 1, 90 + 15 * 0.6 - 1])
    np.testing.assert_allclose(r["scale"], [0.75, 0.75])
    vis = np.asarray(entries[0]["joints_vis"])
    np.testing.assert_array_equal(r["vis"], vis)
    np.testing.assert_allclose(r["joints"][vis > 0], (np.asarray(entries[0]["joints"]) - 1)[vis > 0])
    # centre -1: no adjustment, only the 0-based shift
    np.testing.assert_allclose(recs[1]["center"], [-2, -2])
    np.testing.assert_allclose(recs[1]["scale"], [0.6, 0.6])
    wide = load_mpii_people(f, tmp_path, aspect_ratio=4 / 3)[0]
    np.testing.assert_allclose(wide["scale"], [0.75 * 4 / 3, 0.75])

    _expect_error(lambda: load_mpii_people(tmp_path / "train.json", tmp_path), "train.json")
    entries[1]["joints"] = entries[1]["joints"][:15]
    g = tmp_path / "broken.json"
    g.write_text(json.dumps(entries))
    _expect_error(lambda: load_mpii_people(g, tmp_path), "broken.json", "entry 1", "joints")
    g.write_text("[1, 2,")
    _expect_error(lambda: load_mpii_people(g, tmp_path), "broken.json")


def _dataset(recs, codec, train=False, **kw):
    return TopDownDataset(recs, joint_set=COCO, input_size=INPUT, heatmap_size=HEATMAP, codec=codec,
                          sigma=2.0, train=train, aug_cfg=kw.pop("aug_cfg", None), **kw)


def test_dataset_shapes_and_dtypes(coco):
    recs = load_coco_people(coco["ann"], coco["dir"], aspect_ratio=ASPECT)
    for codec in ("gaussian", "hdm"):
        ds = _dataset(recs, codec)
        item = ds[0]
        assert item["image"].shape == (3, 128, 96) and item["image"].dtype == torch.float32
        k = 17
        assert item["target"].shape == ((k, 32, 24) if codec == "gaussian" else (k, 1, 1))
        assert item["target"].dtype == torch.float32
        assert item["keypoints"].shape == (k, 2) and item["keypoints"].dtype == torch.float32
        assert item["weight"].shape == (k,) and item["weight"].dtype == torch.float32
        assert item["center"].shape == (2,) and item["scale"].shape == (2,)
        assert item["rotation"].shape == () and item["image_id"].dtype == torch.int64
        assert int(item["index"]) == 0 and int(item["image_id"]) == 1
        np.testing.assert_array_equal(item["weight"].numpy(), recs[0]["vis"])
        if codec == "gaussian":
            # each weighted channel peaks at the nearest pixel of its keypoint
            t, kp = item["target"].numpy(), item["keypoints"].numpy()
            for j in np.flatnonzero(recs[0]["vis"]):
                x, y = np.floor(kp[j] + 0.5).astype(int)
                assert t[j, y, x] == 1.0
            assert t[recs[0]["vis"] == 0].sum() == 0
        else:
            assert item["target"].abs().sum() == 0
        batch = collate([ds[0], ds[1]])
        assert batch["image"].shape == (2, 3, 128, 96) and batch["keypoints"].shape == (2, k, 2)


def test_dataset_keypoints_map_back_to_joints(coco):
    recs = load_coco_people(coco["ann"], coco["dir"], aspect_ratio=ASPECT)
    ds = _dataset(recs, "hdm")
    for i, rec in enumerate(recs):
        item = ds[i]
        back = T.heatmap_to_image(item["keypoints"].numpy()[None], item["center"].numpy()[None],
                                  item["scale"].numpy()[None], HEATMAP)[0]
        lab = rec["vis"] > 0
        np.testing.assert_allclose(back[lab], rec["joints"][lab], atol=2e-3)
    # with augmentation: map back with the rotation, into the (possibly mirrored) image
    aug = _dataset(recs, "hdm", train=True, aug_cfg={"half_body_prob": 0.0})
    flips = set()
    for epoch in range(6):
        aug.set_epoch(epoch)
        item, rec = aug[0], recs[0]
        back = T.heatmap_to_image(item["keypoints"].numpy()[None], item["center"].numpy()[None],
                                  item["scale"].numpy()[None], HEATMAP, item["rotation"].numpy()[None])[0]
        joints, vis = rec["joints"], rec["vis"]
        if bool(item["flipped"]):
            joints, vis = T.fliplr_joints(joints, vis, 200, COCO.flip_pairs)
        flips.add(bool(item["flipped"]))
        np.testing.assert_allclose(back[vis > 0], joints[vis > 0], atol=5e-3)
    assert flips == {True, False}


def test_dataset_augmentation_is_deterministic(coco):
    recs = load_coco_people(coco["ann"], coco["dir"], aspect_ratio=ASPECT)
    a = _dataset(recs, "gaussian", train=True, seed=3)
    b = _dataset(recs, "gaussian", train=True, seed=3)
    x, y = a[1], b[1]
    for key in x:
        assert torch.equal(x[key], y[key]), key
    a.set_epoch(1)
    assert not torch.equal(a[1]["scale"], x["scale"])
    b.set_epoch(1)
    assert torch.equal(a[1]["image"], b[1]["image"])
    c = _dataset(recs, "gaussian", train=True, seed=4)
    assert not torch.equal(c[1]["scale"], x["scale"])


def test_dataset_crop_content_follows_keypoints(tmp_path):
    """A blob drawn at the nose lands where the returned keypoint says, for any augmentation."""
    h, w = 160, 200
    nose = np.array([83.4, 61.7])
    yy, xx = np.mgrid[0:h, 0:w]
    blob = np.exp(-((xx - nose[0]) ** 2 + (yy - nose[1]) ** 2) / (2 * 3.0**2))
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 2] = (blob * 255).round().astype(np.uint8)  # red channel (BGR file)
    cv2.imwrite(str(tmp_path / "blob.png"), img)
    joints = np.zeros((17, 2))
    joints[0] = nose
    vis = np.zeros(17)
    vis[0] = 1
    c, s = T.box_to_center_scale([50, 30, 70, 110], ASPECT)
    rec = {"image_path": str(tmp_path / "blob.png"), "image_id": 5, "center": c, "scale": s,
           "joints": joints, "vis": vis, "box_score": 1.0, "area": 7700.0}
    ds = _dataset([rec], "hdm", train=True, aug_cfg={"half_body_prob": 0.0, "scale_factor": 0.2,
                                                     "shift_factor": 0.1, "shift_prob": 0.5})
    stride = INPUT[0] / HEATMAP[0]
    for epoch in range(5):
        ds.set_epoch(epoch)
        item = ds[0]
        red = item["image"][0].numpy() * IMAGENET_STD[0] + IMAGENET_MEAN[0]  # RGB order: red first
        red = np.clip(red - 1e-6, 0, None)
        ys, xs = np.mgrid[0 : red.shape[0], 0 : red.shape[1]]
        cen = np.array([(red * xs).sum(), (red * ys).sum()]) / red.sum()
        kp_in = (item["keypoints"].numpy()[0] + 0.5) * stride - 0.5
        np.testing.assert_allclose(cen, kp_in, atol=0.15)
        assert item["weight"][0] == 1


def test_dataset_unreadable_image(tmp_path):
    rec = {"image_path": str(tmp_path / "missing.jpg"), "image_id": 1, "center": np.array([50.0, 50.0]),
           "scale": np.array([0.5, 0.5]), "joints": np.zeros((17, 2)), "vis": np.zeros(17)}
    with pytest.raises(PipelineError, match="missing.jpg"):
        _dataset([rec], "gaussian")[0]
    with pytest.raises(PipelineError, match="codec"):
        _dataset([rec], "dark")


def test_dataset_mpii(tmp_path):
    rng = np.random.default_rng(2)
    cv2.imwrite(str(tmp_path / "000000001.jpg"), rng.integers(0, 255, (200, 220, 3), dtype=np.uint8))
    f = tmp_path / "train.json"
    f.write_text(json.dumps([_mpii_entry(rng, "000000001.jpg")]))
    recs = load_mpii_people(f, tmp_path)
    ds = TopDownDataset(recs, joint_set=MPII, input_size=(64, 64), heatmap_size=(16, 16), codec="gaussian",
                        sigma=2.0, train=True, aug_cfg={"scale_factor": 0.25, "rot_factor": 30,
                                                        "half_body_prob": 0.0})
    item = ds[0]
    assert item["image"].shape == (3, 64, 64) and item["target"].shape == (16, 16, 16)
    assert item["weight"][6] == 0 and item["weight"][9] == 0


def _train_cfg(root, dataset="coco", **data):
    return {"dataset": dataset, "profile": "paper", "seed": 3, "test": {"image_thre": 0.0},
            "data": {"root": str(root), "input_size": [96, 128], **data}}


def test_training_boxes_are_shifted_once_at_load_only_for_the_train_split(coco):
    """builders.records: HRFormer's load-time shift moves ground-truth centres of the training split
    only, the same way on every call with the same seed (every DDP process, every resume), and not at
    all without load_shift_prob."""
    from pipeline.engine import builders

    root = coco["tmp"]
    (root / "annotations" / "person_keypoints_train2017.json").write_text(coco["ann"].read_text())
    plain = builders.records(_train_cfg(root), "train")
    cfg = _train_cfg(root, load_shift_prob=1.0, load_shift_factor=0.2)
    shifted = builders.records(cfg, "train")
    again = builders.records(cfg, "train")
    assert len(plain) == len(shifted) == 2
    for p, s, a in zip(plain, shifted, again):
        np.testing.assert_array_equal(s["center"], a["center"])  # drawn once per seed
        np.testing.assert_array_equal(s["scale"], p["scale"])
        moved = np.abs(s["center"] - p["center"]) / np.array(p["box"][2:])
        assert np.all(moved > 0) and np.all(moved <= 0.2)
    other_seed = builders.records({**cfg, "seed": 4}, "train")
    assert not np.allclose(other_seed[0]["center"], shifted[0]["center"])
    val = builders.records(cfg, "val")
    for p, v in zip(builders.records(_train_cfg(root), "val"), val):
        np.testing.assert_array_equal(p["center"], v["center"])
