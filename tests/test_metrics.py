"""COCO keypoint AP (with HRNet's rescoring and OKS-NMS) and MPII PCKh, checked by hand."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pipeline.data.skeleton import COCO_SIGMAS
from pipeline.errors import PipelineError
from pipeline.metrics import coco as cm
from pipeline.metrics import mpii as mm

# ------------------------------------------------------------------------------------------------
# COCO
# ------------------------------------------------------------------------------------------------
# a rough standing figure in a unit box (x right, y down), 17 COCO joints
_TEMPLATE = np.array([
    [0.50, 0.08], [0.47, 0.06], [0.53, 0.06], [0.44, 0.08], [0.56, 0.08],
    [0.38, 0.22], [0.62, 0.22], [0.33, 0.38], [0.67, 0.38], [0.30, 0.52], [0.70, 0.52],
    [0.42, 0.55], [0.58, 0.55], [0.42, 0.75], [0.58, 0.75], [0.42, 0.95], [0.58, 0.95],
])


def _person(x0, y0, w, h, invisible=()):
    xy = _TEMPLATE * [w, h] + [x0, y0]
    v = np.full(17, 2)
    v[list(invisible)] = 0
    xy[v == 0] = 0.0
    return xy, v


def _ann(ann_id, image_id, xy, v, area, bbox):
    kp = np.concatenate([xy, v[:, None]], axis=1).reshape(-1).tolist()
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "keypoints": kp,
            "num_keypoints": int((v > 0).sum()), "area": float(area), "bbox": list(map(float, bbox)),
            "iscrowd": 0}


def _gt_dict(people):
    """people: list of (image_id, x0, y0, w, h, invisible, area)."""
    images = sorted({p[0] for p in people})
    anns = []
    for n, (img, x0, y0, w, h, inv, area) in enumerate(people):
        xy, v = _person(x0, y0, w, h, inv)
        anns.append(_ann(n + 1, img, xy, v, area, [x0, y0, w, h]))
    return {
        "images": [{"id": i, "width": 640, "height": 480, "file_name": f"{i:012d}.jpg"} for i in images],
        "annotations": anns,
        "categories": [{"id": 1, "name": "person", "supercategory": "person",
                        "keypoints": [], "skeleton": []}],
    }


# 2 images, 3 people: one large and one medium (with unlabelled joints) in image 1, one large in 2
PEOPLE = [
    (1, 50, 40, 120, 300, (), 24000.0),
    (1, 300, 200, 40, 100, (3, 4, 15), 2500.0),
    (2, 200, 60, 110, 280, (0, 16), 20000.0),
]


@pytest.fixture()
def gt_file(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(_gt_dict(PEOPLE)))
    return path


def _results_from_gt(gt, shift=(0.0, 0.0), score=1.0):
    out = []
    for a in gt["annotations"]:
        kp = np.asarray(a["keypoints"], float).reshape(17, 3)
        kp[:, :2] += shift
        kp[:, 2] = 0.9
        out.append({"image_id": a["image_id"], "category_id": 1,
                    "keypoints": kp.reshape(-1).tolist(), "score": score})
    return out


def _hand_oks(gt_xy, v, dt_xy, area):
    d2 = ((gt_xy - dt_xy) ** 2).sum(axis=1)
    e = d2 / (2 * COCO_SIGMAS) ** 2 / (area + np.spacing(1)) / 2
    return float(np.exp(-e)[v > 0].mean())


def test_perfect_predictions_give_ap_1(gt_file):
    gt = json.loads(gt_file.read_text())
    m = cm.evaluate_keypoints(gt_file, _results_from_gt(gt))
    assert list(m) == list(cm.STAT_NAMES)
    for k in ("AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL"):
        assert m[k] == pytest.approx(1.0), k


@pytest.mark.parametrize("shift, step_ap", [
    ((3.0, 0.0), 1.0),    # OKS 0.974: above every threshold
    ((6.0, 2.0), 0.8),    # OKS 0.893: passes 0.50 ... 0.85
    ((12.0, 0.0), 0.5),   # OKS 0.706: passes 0.50 ... 0.70
    ((30.0, 0.0), 0.0),   # OKS < 0.5: a false positive and a miss
])
def test_shifted_single_person_ap_matches_hand_oks(tmp_path, shift, step_ap):
    # one large person: AP at each OKS threshold is 1 if OKS >= t else 0
    people = [(1, 100, 50, 120, 300, (5, 12), 22000.0)]
    gt = _gt_dict(people)
    path = tmp_path / "gt1.json"
    path.write_text(json.dumps(gt))
    xy, v = _person(100, 50, 120, 300, (5, 12))
    oks = _hand_oks(xy, v, xy + shift, 22000.0)
    thresholds = np.linspace(0.5, 0.95, 10)
    assert np.min(np.abs(thresholds - oks)) > 1e-3, "choose a shift away from a threshold"
    expected = float(np.mean(oks >= thresholds))
    assert expected == pytest.approx(step_ap)
    m = cm.evaluate_keypoints(path, _results_from_gt(gt, shift=shift))
    assert m["AP"] == pytest.approx(expected)
    assert m["AR"] == pytest.approx(expected)
    assert m["AP50"] == pytest.approx(1.0 if oks >= 0.5 else 0.0)
    assert m["AP75"] == pytest.approx(1.0 if oks >= 0.75 else 0.0)
    assert math.isnan(m["APM"])  # no medium person in this gt: undefined, not 0


def test_oks_iou_formula_and_vis_threshold():
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.uniform(0, 200, (17, 2)), np.full((17, 1), 0.9)], axis=1)
    b = a.copy()[None].repeat(2, axis=0)
    b[0, :, 0] += 4.0
    b[1, :, 1] += 2.0
    b[1, :8, 2] = 0.1  # low-score joints in the second pose
    area_a, areas_b = 10000.0, np.array([12000.0, 8000.0])
    got = cm.oks_iou(a, b, area_a, areas_b, COCO_SIGMAS)
    var = (2 * COCO_SIGMAS) ** 2
    e0 = 16.0 / var / ((area_a + 12000.0) / 2 + np.spacing(1)) / 2
    e1 = 4.0 / var / ((area_a + 8000.0) / 2 + np.spacing(1)) / 2
    assert got == pytest.approx([np.exp(-e0).mean(), np.exp(-e1).mean()])
    got_vis = cm.oks_iou(a, b, area_a, areas_b, COCO_SIGMAS, in_vis_thre=0.2)
    assert got_vis[1] == pytest.approx(np.exp(-e1)[8:].mean())
    assert got_vis[0] == pytest.approx(got[0])


def _pred(image_id, kpts_xy, joint_scores, box_score, area):
    kp = np.concatenate([kpts_xy, np.asarray(joint_scores, float)[:, None]], axis=1)
    return {"image_id": image_id, "keypoints": kp, "box_score": box_score, "area": area,
            "center": [0.0, 0.0], "scale": [1.0, 1.0]}


def test_rescoring_formula():
    xy, _ = _person(50, 40, 120, 300)
    scores = np.array([0.9, 0.5, 0.1, 0.2, 0.3] + [0.0] * 12)
    p = _pred(7, xy, scores, 0.8, 20000.0)
    low = _pred(8, xy, np.full(17, 0.15), 0.9, 20000.0)
    out = cm.rescore_and_nms([p, low])
    by_img = {o["image_id"]: o for o in out}
    # joints above 0.2 (strictly): 0.9, 0.5, 0.3
    assert by_img[7]["score"] == pytest.approx(0.8 * (0.9 + 0.5 + 0.3) / 3)
    assert by_img[8]["score"] == 0.0
    assert by_img[7]["center"] == [0.0, 0.0]  # extra keys carried along
    assert "score" not in p  # inputs untouched


def test_oks_nms_removes_near_duplicate_keeps_distinct():
    xy, _ = _person(50, 40, 120, 300)
    jitter = np.random.default_rng(1).normal(0, 0.5, xy.shape)
    far, _ = _person(400, 100, 120, 300)
    s = np.full(17, 0.8)
    preds = [
        _pred(1, xy, s, 0.7, 36000.0),            # best
        _pred(1, xy + jitter, s, 0.6, 36000.0),   # duplicate of the best
        _pred(1, far, s, 0.5, 36000.0),           # another person
        _pred(2, xy + jitter, s, 0.4, 36000.0),   # same place, other image: not a duplicate
    ]
    poses = [dict(p, score=p["box_score"]) for p in preds[:3]]
    assert cm.oks_nms(poses, 0.9) == [0, 2]
    kept = cm.rescore_and_nms(preds)
    assert [(k["image_id"], k["box_score"]) for k in kept] == [(1, 0.7), (1, 0.5), (2, 0.4)]
    # with a strict threshold the jittered pose survives too
    assert sorted(cm.oks_nms(poses, 0.9999)) == [0, 1, 2]


def test_oks_nms_ties_keep_the_later_pose_as_the_reference_does():
    """Tied scores (every ground-truth box scores 1): HRNet and MMPose order by
    ``scores.argsort()[::-1]``, which puts the later of two tied poses first, so the later one of two
    near-duplicates survives."""
    xy, _ = _person(50, 40, 120, 300)
    jitter = np.random.default_rng(2).normal(0, 0.5, xy.shape)
    far, _ = _person(400, 100, 120, 300)
    s = np.full(17, 0.8)
    poses = [dict(_pred(1, p, s, 1.0, 36000.0), score=sc)
             for p, sc in ((xy, 1.0), (xy + jitter, 1.0), (far, 1.0), (far + jitter, 0.5))]
    assert cm.oks_nms(poses, 0.9) == [2, 1]  # later-first among the three tied at 1.0
    # descending score, ties later-first (the reference's argsort()[::-1] with a stable sort); far apart
    # poses, so nothing is suppressed and only the order shows
    scores = [1.0, 0.3, 1.0, 0.7, 1.0, 0.3, 0.7]
    spread = [dict(_pred(1, _person(200 * i, 0, 60, 150)[0], s, 1.0, 9000.0), score=sc)
              for i, sc in enumerate(scores)]
    assert cm.oks_nms(spread, 0.9) == [4, 2, 0, 6, 3, 5, 1]


def test_write_results_round_trip_and_file_evaluation(gt_file, tmp_path, capsys):
    gt = json.loads(gt_file.read_text())
    preds = []
    for a in gt["annotations"]:
        kp = np.asarray(a["keypoints"], float).reshape(17, 3)
        kp[:, 2] = 0.8
        preds.append({"image_id": a["image_id"], "keypoints": kp + [0.0001, 0, 0],
                      "box_score": 0.95, "area": a["area"]})
    kept = cm.rescore_and_nms(preds)
    out = tmp_path / "res" / "results.json"
    cm.write_results(kept, out)
    data = json.loads(out.read_text())
    assert len(data) == 3
    assert set(data[0]) == {"image_id", "category_id", "keypoints", "score"}
    assert data[0]["category_id"] == 1 and len(data[0]["keypoints"]) == 51
    assert data[0]["score"] == pytest.approx(0.95 * 0.8)
    assert np.allclose(np.reshape(data[0]["keypoints"], (17, 3))[:, :2],
                       np.asarray(kept[0]["keypoints"])[:, :2], atol=1e-3)
    assert not list(out.parent.glob(".*tmp"))  # atomic write left nothing behind
    m = cm.evaluate_results_file(gt_file, out)
    assert m["AP"] == pytest.approx(1.0)
    assert cm.main([str(gt_file), str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["AP"] == pytest.approx(1.0)


def test_empty_results_give_zeros(gt_file):
    assert cm.evaluate_keypoints(gt_file, []) == {k: 0.0 for k in cm.STAT_NAMES}


def test_bad_ground_truth_and_results(tmp_path, gt_file, capsys):
    missing = tmp_path / "nope.json"
    with pytest.raises(PipelineError, match="nope.json"):
        cm.evaluate_keypoints(missing, [])
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    with pytest.raises(PipelineError, match="corrupt.json"):
        cm.evaluate_keypoints(corrupt, [])
    gt = _gt_dict(PEOPLE)
    del gt["annotations"][1]["area"]
    bad = tmp_path / "bad_gt.json"
    bad.write_text(json.dumps(gt))
    with pytest.raises(PipelineError) as err:
        cm.evaluate_keypoints(bad, [])
    assert "bad_gt.json" in str(err.value) and "annotations[1]" in str(err.value)
    assert "\n" not in str(err.value)
    res = _results_from_gt(json.loads(gt_file.read_text()))
    res[0]["image_id"] = 99
    with pytest.raises(PipelineError, match="image_id 99"):
        cm.evaluate_keypoints(gt_file, res)
    res_path = tmp_path / "res.json"
    res_path.write_text(json.dumps([{"image_id": 1, "score": 1.0}]))
    with pytest.raises(PipelineError, match=r"res.json: entry 0: missing field 'keypoints'"):
        cm.evaluate_results_file(gt_file, res_path)
    assert cm.main([str(gt_file), str(missing)]) == 1
    assert "nope.json" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# MPII
# ------------------------------------------------------------------------------------------------
J = {n: i for i, n in enumerate(mm.GT_VALID_JOINT_NAMES)}


def _mpii_gt():
    rng = np.random.default_rng(3)
    n = 3
    pos = rng.uniform(20, 400, (16, 2, n))  # 1-based
    diag = np.array([[30.0, 40.0], [60.0, 80.0], [15.0, 20.0]])  # lengths 50, 100, 25
    heads = np.zeros((2, 2, n))
    heads[0] = np.array([[100.0, 10.0, 5.0], [50.0, 20.0, 7.0]])
    heads[1] = heads[0] + diag.T
    return {"jnt_missing": np.zeros((16, n), dtype=int), "pos_gt_src": pos, "headboxes_src": heads}


def _exact_preds(gt):
    return np.transpose(gt["pos_gt_src"], (2, 0, 1)) - 1.0  # 0-based


def test_mpii_head_size_and_one_based_handling():
    gt = _mpii_gt()
    scaled, visible = mm.normalized_errors(_exact_preds(gt) + 1.0, gt)  # forgot to go 0-based
    assert visible.all()
    assert np.allclose(scaled, np.sqrt(2) / (0.6 * np.array([50.0, 100.0, 25.0]))[None, :])


def test_mpii_exact_predictions_are_perfect():
    m = mm.pckh(_exact_preds(_mpii_gt()), _mpii_gt())
    assert set(m) == {"Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle",
                      "Mean", "Mean@0.1", "Mean@0.11"}
    assert all(v == pytest.approx(100.0) for v in m.values())


def test_mpii_offsets_missing_and_weighted_mean():
    gt = _mpii_gt()
    hs = 0.6 * np.array([50.0, 100.0, 25.0])
    preds = _exact_preds(gt)
    preds[0, J["head"]] += [0.4 * hs[0], 0.0]       # correct at 0.5, wrong at 0.1
    preds[1, J["head"]] += [0.0, 0.6 * hs[1]]       # wrong
    preds[0, J["lsho"]] += 0.6 * hs[0] * np.array([0.6, 0.8])  # wrong
    preds[2, J["relb"]] += [0.05 * hs[2], 0.0]      # correct even at 0.1
    preds[:, J["pelv"]] += 100.0                     # wrong but excluded from Mean
    preds[:, J["thor"]] += 100.0
    gt["jnt_missing"][J["rank"], 2] = 1              # missing: excluded whatever the prediction
    preds[2, J["rank"]] += 500.0
    m = mm.pckh(preds, gt)
    assert m["Head"] == pytest.approx(100 * 2 / 3)
    assert m["Shoulder"] == pytest.approx((100 * 2 / 3 + 100) / 2)
    for col in ("Elbow", "Wrist", "Hip", "Knee", "Ankle"):
        assert m[col] == pytest.approx(100.0), col
    # 14 joints × 3 people − 1 missing = 41 visible; 2 wrong at 0.5
    assert m["Mean"] == pytest.approx(100 * 39 / 41)
    unweighted = (12 * 100 + 2 * 100 * 2 / 3) / 14
    assert abs(m["Mean"] - unweighted) > 0.1
    # at 0.1 the 0.4-head-size head is wrong too
    assert m["Mean@0.1"] == pytest.approx(100 * 38 / 41)
    assert m["Mean@0.11"] == pytest.approx(100 * 38 / 41)
    strict = mm.pckh(preds, gt, threshold=0.3)
    assert strict["Head"] == pytest.approx(100 / 3)


def test_mpii_files_round_trip(tmp_path, capsys):
    from scipy.io import savemat

    gt = _mpii_gt()
    names = np.empty((1, 16), dtype=object)
    for i, n in enumerate(mm.GT_VALID_JOINT_NAMES):
        names[0, i] = np.array([n])
    gt_path = tmp_path / "gt_valid.mat"
    savemat(gt_path, dict(gt, dataset_joints=names))
    loaded = mm.load_gt_valid(gt_path)
    assert loaded["dataset_joints"] == list(mm.GT_VALID_JOINT_NAMES)
    assert loaded["pos_gt_src"].shape == (16, 2, 3) and loaded["headboxes_src"].shape == (2, 2, 3)

    preds = _exact_preds(gt)
    mat_path = tmp_path / "out" / "pred.mat"
    mm.write_predictions(preds, mat_path)
    assert mm.evaluate_predictions_file(mat_path, gt_path)["Mean"] == pytest.approx(100.0)
    json_path = tmp_path / "pred.json"
    json_path.write_text(json.dumps((preds + 1.0).tolist()))
    assert mm.evaluate_predictions_file(json_path, gt_path, one_based=True)["Head"] == pytest.approx(100.0)
    # read as 0-based, every joint is off by (1, 1) px: wrong for the 15-px head at 0.05
    assert mm.evaluate_predictions_file(json_path, gt_path, threshold=0.05)["Mean"] < 100.0
    assert mm.main([str(mat_path), str(gt_path)]) == 0
    assert json.loads(capsys.readouterr().out)["Mean"] == pytest.approx(100.0)


def test_mpii_bad_files(tmp_path):
    from scipy.io import savemat

    gt = _mpii_gt()
    with pytest.raises(PipelineError, match="gone.mat: file not found"):
        mm.load_gt_valid(tmp_path / "gone.mat")
    no_heads = tmp_path / "no_heads.mat"
    savemat(no_heads, {"dataset_joints": np.array(mm.GT_VALID_JOINT_NAMES, dtype=object),
                       "jnt_missing": gt["jnt_missing"], "pos_gt_src": gt["pos_gt_src"]})
    with pytest.raises(PipelineError, match="no_heads.mat: variable 'headboxes_src' is missing"):
        mm.load_gt_valid(no_heads)
    bad_shape = tmp_path / "bad_shape.mat"
    savemat(bad_shape, {"dataset_joints": np.array(mm.GT_VALID_JOINT_NAMES, dtype=object),
                        "jnt_missing": gt["jnt_missing"], "pos_gt_src": gt["pos_gt_src"][:, :, :2],
                        "headboxes_src": gt["headboxes_src"]})
    with pytest.raises(PipelineError, match="bad_shape.mat: variable 'pos_gt_src' has shape"):
        mm.load_gt_valid(bad_shape)
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"not a mat file at all")
    with pytest.raises(PipelineError, match="junk.mat"):
        mm.load_gt_valid(junk)
    with pytest.raises(PipelineError, match="holds 3 people but there are 2 predictions"):
        mm.pckh(_exact_preds(gt)[:2], gt)
    # with the file, the message names the file (not "predictions": either may be the wrong one)
    good = tmp_path / "gt_valid.mat"
    savemat(good, {"dataset_joints": np.array(mm.GT_VALID_JOINT_NAMES, dtype=object), **{
        k: gt[k] for k in ("jnt_missing", "pos_gt_src", "headboxes_src")}})
    with pytest.raises(PipelineError, match=r"gt_valid\.mat: holds 3 people but there are 2 predictions"):
        mm.pckh(_exact_preds(gt)[:2], good)
