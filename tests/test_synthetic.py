"""Tests of the synthetic COCO / MPII generators: formats, determinism, metrics, atomicity."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
from pycocotools.coco import COCO as CocoApi
from pycocotools.cocoeval import COCOeval

from pipeline.data import synthetic
from pipeline.data.skeleton import COCO, MPII

SIZE = (160, 120)
COCO_KW = dict(image_size=SIZE, train_images=6, val_images=6, test_images=4, max_people=3, progress=False)
MPII_KW = dict(image_size=SIZE, train_images=4, val_images=8, max_people=2, progress=False)
ANN_FILES = ("person_keypoints_train2017.json", "person_keypoints_val2017.json",
             "person_keypoints_test-dev2017.json", "image_info_test-dev2017.json")


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "coco"
    summary = synthetic.generate_coco(out, seed=3, **COCO_KW)
    assert summary["val2017"]["images"] == 6
    return out


@pytest.fixture(scope="module")
def mpii_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "mpii"
    synthetic.generate_mpii(out, seed=3, **MPII_KW)
    return out


def _quiet_coco(path: Path) -> CocoApi:
    with contextlib.redirect_stdout(io.StringIO()):
        return CocoApi(str(path))


def test_layout(coco_dir: Path, mpii_dir: Path) -> None:
    for name in ANN_FILES:
        assert (coco_dir / "annotations" / name).is_file()
    for split, n in (("train2017", 6), ("val2017", 6), ("test2017", 4)):
        assert len(list((coco_dir / "images" / split).glob("*.jpg"))) == n
    for name in ("COCO_val2017_detections_AP_H_56_person.json", "COCO_test-dev2017_detections_AP_H_609_person.json"):
        assert (coco_dir / "person_detection_results" / name).is_file()
    assert len(list((mpii_dir / "images").glob("*.jpg"))) == 12
    for name in ("train.json", "valid.json", "gt_valid.mat"):
        assert (mpii_dir / "annot" / name).is_file()


def test_same_seed_same_bytes_and_other_seed_differs(coco_dir: Path, mpii_dir: Path, tmp_path: Path) -> None:
    again = tmp_path / "coco"
    synthetic.generate_coco(again, seed=3, **COCO_KW)
    for name in ANN_FILES:
        assert (again / "annotations" / name).read_bytes() == (coco_dir / "annotations" / name).read_bytes()
    det = "person_detection_results/COCO_val2017_detections_AP_H_56_person.json"
    assert (again / det).read_bytes() == (coco_dir / det).read_bytes()
    jpg = "images/val2017/000000100000.jpg"
    assert (again / jpg).read_bytes() == (coco_dir / jpg).read_bytes()
    other = tmp_path / "coco_other"
    synthetic.generate_coco(other, seed=4, **COCO_KW)
    name = "person_keypoints_val2017.json"
    assert (other / "annotations" / name).read_bytes() != (coco_dir / "annotations" / name).read_bytes()
    mpii_again = tmp_path / "mpii"
    synthetic.generate_mpii(mpii_again, seed=3, **MPII_KW)
    assert (mpii_again / "annot/valid.json").read_bytes() == (mpii_dir / "annot/valid.json").read_bytes()


def test_coco_eval_of_ground_truth_is_perfect(coco_dir: Path) -> None:
    gt = _quiet_coco(coco_dir / "annotations" / "person_keypoints_val2017.json")
    results = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
               for a in gt.dataset["annotations"] if a["num_keypoints"] > 0]
    assert results
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_coco_annotations_are_consistent(coco_dir: Path) -> None:
    counts = np.zeros(3, int)
    ids: set[int] = set()
    for name, split in (("person_keypoints_train2017.json", "train2017"), ("person_keypoints_val2017.json", "val2017"),
                        ("person_keypoints_test-dev2017.json", "test2017")):
        data = json.loads((coco_dir / "annotations" / name).read_text())
        cat = data["categories"][0]
        assert cat["keypoints"] == list(COCO.joints) and len(cat["skeleton"]) == len(COCO.bones)
        images = {im["id"]: im for im in data["images"]}
        assert not ids & set(images), "image ids must be unique across splits"
        ids |= set(images)
        for im in images.values():
            assert im["file_name"] == f"{im['id']:012d}.jpg"
            pic = cv2.imread(str(coco_dir / "images" / split / im["file_name"]))
            assert pic is not None and pic.shape[:2] == (im["height"], im["width"]) == (SIZE[1], SIZE[0])
        for a in data["annotations"]:
            im = images[a["image_id"]]
            w, h = im["width"], im["height"]
            k = np.array(a["keypoints"], dtype=float).reshape(17, 3)
            assert set(np.unique(k[:, 2])) <= {0, 1, 2}
            assert a["num_keypoints"] == int((k[:, 2] > 0).sum())
            lab = k[k[:, 2] > 0]
            assert np.all((lab[:, 0] >= 0) & (lab[:, 0] <= w - 1) & (lab[:, 1] >= 0) & (lab[:, 1] <= h - 1))
            assert np.all(k[k[:, 2] == 0] == 0)
            x, y, bw, bh = a["bbox"]
            assert x >= 0 and y >= 0 and bw > 0 and bh > 0 and x + bw <= w and y + bh <= h
            assert 0 < a["area"] <= bw * bh and a["iscrowd"] == 0 and len(a["segmentation"][0]) >= 6
            counts += np.bincount(k[:, 2].astype(int), minlength=3)
    assert counts[0] > 0 and counts[1] > 0 and counts[2] > counts[1]
    info = json.loads((coco_dir / "annotations" / "image_info_test-dev2017.json").read_text())
    assert "annotations" not in info and len(info["images"]) == 4 and min(im["id"] for im in info["images"]) >= 200000


def test_detections_are_imperfect_results(coco_dir: Path) -> None:
    gt = _quiet_coco(coco_dir / "annotations" / "person_keypoints_val2017.json")
    path = coco_dir / "person_detection_results" / "COCO_val2017_detections_AP_H_56_person.json"
    dets = json.loads(path.read_text())
    assert dets
    gt_boxes = {tuple(a["bbox"]) for a in gt.dataset["annotations"]}
    for d in dets:
        assert set(d) == {"image_id", "category_id", "bbox", "score"} and d["category_id"] == 1
        assert d["image_id"] in gt.imgs and 0.3 < d["score"] <= 1.0 and len(d["bbox"]) == 4
    assert any(tuple(d["bbox"]) not in gt_boxes for d in dets)
    with contextlib.redirect_stdout(io.StringIO()):
        gt.loadRes(str(path))  # pycocotools accepts the file


def test_mpii_json_matches_mat(mpii_dir: Path) -> None:
    entries = json.loads((mpii_dir / "annot" / "valid.json").read_text())
    mat = scipy.io.loadmat(str(mpii_dir / "annot" / "gt_valid.mat"))
    n = len(entries)
    assert n > 0
    assert mat["jnt_missing"].shape == (16, n) and mat["pos_gt_src"].shape == (16, 2, n)
    assert mat["headboxes_src"].shape == (2, 2, n)
    names = [str(v[0]) for v in mat["dataset_joints"][0]]
    assert names == ["rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor",
                     "neck", "head", "rwri", "relb", "rsho", "lsho", "lelb", "lwri"]
    assert np.where(mat["dataset_joints"] == "head")[1][0] == 9  # as HRNet's evaluator looks it up
    for k, e in enumerate(entries):
        assert set(e) == {"image", "center", "scale", "joints", "joints_vis"} and e["scale"] > 0
        joints, vis = np.array(e["joints"]), np.array(e["joints_vis"])
        assert joints.shape == (16, 2) and vis.shape == (16,)
        np.testing.assert_array_equal(mat["jnt_missing"][:, k], 1 - vis)
        np.testing.assert_allclose(mat["pos_gt_src"][vis == 1, :, k], joints[vis == 1])
        assert np.all(joints[vis == 0] == -1)
        box = mat["headboxes_src"][:, :, k]
        assert np.all(box[1] > box[0])
        head_size = 0.6 * np.linalg.norm(box[1] - box[0])
        assert 0.08 * 200 * e["scale"] < head_size < 0.25 * 200 * e["scale"]
        for j in (MPII.joints.index("head_top"), MPII.joints.index("upper_neck")):
            if vis[j]:
                assert np.all(joints[j] >= box[0] - 1.0) and np.all(joints[j] <= box[1] + 1.0)


def test_mpii_joints_are_one_based_render_positions(mpii_dir: Path) -> None:
    entries = json.loads((mpii_dir / "annot" / "valid.json").read_text())
    expected = []
    for i in range(MPII_KW["val_images"]):
        rng = synthetic.image_rng(3, "mpii", "valid", i)
        _, people = synthetic.render_scene(rng, SIZE[0], SIZE[1], MPII_KW["max_people"], synthetic.MPII_STYLE)
        expected += [p.mpii for p in people if p.mpii[:, 2].sum() >= 4]
    assert len(expected) == len(entries)
    for e, m in zip(entries, expected):
        vis = np.array(e["joints_vis"]) == 1
        np.testing.assert_array_equal(vis, m[:, 2] > 0)
        np.testing.assert_allclose(np.array(e["joints"])[vis] - 1.0, m[vis, :2], atol=0.006)


def test_left_is_the_persons_left() -> None:
    """A front-facing upright figure has its left shoulder on the image's right."""
    rng = np.random.default_rng(0)
    pose = synthetic.pose_standing(rng)
    body = synthetic.build_body(pose, synthetic.sample_build(rng), rng)
    ls, rs = body.points[COCO.joints.index("left_shoulder")], body.points[COCO.joints.index("right_shoulder")]
    assert ls[0] > rs[0]
    back = body.points @ synthetic.rotation_y(180).T
    assert back[COCO.joints.index("left_shoulder"), 0] < back[COCO.joints.index("right_shoulder"), 0]


def test_side_and_back_views_scale_with_difficulty() -> None:
    """Views from any direction (where left and right are hardest to tell) make up 35 % at
    difficulty 1 and a tenth of that at 0.1; back views 20 % at 1 and 6.5 % at 0.1."""
    for d in (1.0, 0.1):
        rng = np.random.default_rng(11)
        yaws = np.array([synthetic.sample_view(rng, d)[0] for _ in range(6000)]) % 360
        side = np.mean((np.abs(yaws - 90) < 30) | (np.abs(yaws - 270) < 30))
        front = np.mean((yaws < 60) | (yaws > 300))
        back = np.mean(np.abs(yaws - 180) < 60)
        u, b = 0.35 * d, 0.20 * (0.25 + 0.75 * d)
        # uniform yaw puts 1/3 of its share in the two 60-degree side windows (and 1/3 each in the
        # 120-degree front and back windows); the N(0 or 180, 25) views reach the side windows
        # with probability 2 * P(z > 2.4) = 1.6 %
        assert side == pytest.approx(u / 3 + (1 - u) * 0.016, abs=0.012)
        assert back == pytest.approx(b + u / 3, abs=0.015)
        assert front == pytest.approx(1 - u - b + u / 3, abs=0.02)


@pytest.mark.parametrize("difficulty", [0.0, 0.5, 1.0])
def test_people_overlap_at_most_as_the_difficulty_allows(difficulty: float) -> None:
    """Scenes hold several people, but one covers at most ``max_overlap(d)`` of another's box
    (a hand-computed case of ``overlap_fraction`` first)."""
    a = synthetic.Person(px=np.array([[0.0, 0.0], [10.0, 10.0]]), depth=np.zeros(2), facing={}, height=1.0,
                          parts=[], half_width={})
    b = synthetic.Person(px=np.array([[5.0, 5.0], [9.0, 25.0]]), depth=np.zeros(2), facing={}, height=1.0,
                          parts=[], half_width={})
    assert synthetic.overlap_fraction(a, b) == pytest.approx(4 * 5 / (4 * 20))
    style = synthetic.with_difficulty(synthetic.COCO_STYLE, difficulty)
    counts = []
    for i in range(12):
        _, people = synthetic.render_scene(np.random.default_rng(i), 160, 120, 3, style)
        counts.append(len(people))
        for j, p in enumerate(people):
            for q in people[:j]:
                assert synthetic.overlap_fraction(p, q) <= synthetic.max_overlap(difficulty) + 1e-12
    assert max(counts) >= 2


def test_failure_midway_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = synthetic.write_jpeg
    calls = {"n": 0}

    def flaky(path: Path, image: np.ndarray, quality: int = 90) -> None:
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("disk full")
        real(path, image, quality)

    monkeypatch.setattr(synthetic.files, "write_jpeg", flaky)
    out = tmp_path / "coco"
    with pytest.raises(RuntimeError):
        synthetic.generate_coco(out, seed=0, **COCO_KW)
    assert not out.exists()
    calls["n"] = 0
    with pytest.raises(RuntimeError):
        synthetic.generate_mpii(tmp_path / "mpii", seed=0, **MPII_KW)
    assert not (tmp_path / "mpii").exists()
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_are_pipeline_errors(tmp_path: Path) -> None:
    from pipeline.errors import PipelineError

    with pytest.raises(PipelineError):
        synthetic.generate_coco(tmp_path / "c", seed=0, image_size=(8, 8), train_images=1, val_images=1,
                                test_images=1, max_people=1, progress=False)
    with pytest.raises(PipelineError):
        synthetic.generate_mpii(tmp_path / "m", seed=0, image_size=SIZE, train_images=1, val_images=1,
                                max_people=0, progress=False)
