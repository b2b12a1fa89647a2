"""Every malformed input file the paper profile reads ends as one PipelineError naming the file and what is
wrong: COCO annotations and person detections (data stage, evaluation), COCO ground truth and results
(scoring), MPII annotations and gt_valid.mat, and the COCO server's scores file. One valid file per kind,
each case breaks one field of it."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from scipy.io import savemat

from pipeline.data.coco import load_coco_people
from pipeline.data.mpii import load_mpii_people
from pipeline.errors import PipelineError
from pipeline.metrics import coco as cm
from pipeline.metrics import coco_server
from pipeline.metrics import mpii as mm

K = 17


def _write(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj))
    return path


def _set(path: str, value: Any) -> Callable[[Any], Any]:
    """A mutation: ``data[a][b]... = value`` for ``path`` "a.b..." (integers index lists); ``value`` DELETE
    removes the key."""
    def mutate(data: Any) -> Any:
        *head, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        obj = data
        for p in head:
            obj = obj[p]
        if value is DELETE:
            del obj[last]
        else:
            obj[last] = value
        return data
    return mutate


DELETE = object()


def _replace(value: Any) -> Callable[[Any], Any]:
    return lambda data: value


# ------------------------------------------------------------------------------------------------ COCO
def _coco_gt() -> dict:
    kps = []
    for j in range(K):
        kps += [20.0 + j, 30.0 + j, 2]
    return {"images": [{"id": 1, "file_name": "000001.jpg", "width": 200, "height": 160},
                       {"id": 2, "file_name": "000002.jpg", "width": 200, "height": 160}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "keypoints": kps, "num_keypoints": K,
                             "area": 3000.0, "iscrowd": 0, "bbox": [10.0, 20.0, 60.0, 50.0]},
                            {"id": 8, "image_id": 2, "category_id": 1, "keypoints": kps, "num_keypoints": K,
                             "area": 3000.0, "iscrowd": 0, "bbox": [10.0, 20.0, 60.0, 50.0]}],
            "categories": [{"id": 1, "name": "person"}]}


@pytest.mark.parametrize("mutate, message", [
    (_replace([1, 2]), "expected a COCO JSON object with an 'images' list"),
    (_set("images", {}), "missing or malformed 'images' list"),
    (_set("images.0", 5), "images[0] is not an object"),
    (_set("images.0.id", "1"), "images[0]: 'id' must be an integer"),
    (_set("images.0.file_name", DELETE), "image id 1: 'file_name' must be a string"),
    (_set("images.0.height", 0), "image id 1: 'height' must be a positive number"),
    (_set("annotations.0", [1]), "annotations[0] is not an object"),
    (_set("annotations.0.area", "big"), "annotation id 7: 'area' must be a number"),
])
def test_bad_coco_annotation_file_for_the_data_stage(tmp_path, mutate, message):
    ann = _write(tmp_path / "ann.json", mutate(_coco_gt()))
    with pytest.raises(PipelineError) as exc:
        load_coco_people(ann, tmp_path, aspect_ratio=0.75)
    assert (exc.value.where, exc.value.what) == (str(ann), message)


def test_detection_boxes_need_a_detection_file(tmp_path):
    ann = _write(tmp_path / "ann.json", _coco_gt())
    with pytest.raises(PipelineError, match="detection boxes requested .* but no det_file given"):
        load_coco_people(ann, tmp_path, aspect_ratio=0.75, use_gt_boxes=False)


@pytest.mark.parametrize("dets, message", [
    ({"image_id": 1}, "expected a JSON list of detections"),
    ([5], "detection #0 is not an object"),
    ([{"image_id": "1", "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.9}],
     "detection #0: 'image_id' must be an integer"),
    ([{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3], "score": 0.9}],
     "detection #0 (image 1): 'bbox' must be 4 numbers"),
    ([{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": None}],
     "detection #0 (image 1): 'score' must be a number"),
])
def test_bad_detection_file(tmp_path, dets, message):
    ann = _write(tmp_path / "ann.json", _coco_gt())
    det = _write(tmp_path / "det.json", dets)
    with pytest.raises(PipelineError) as exc:
        load_coco_people(ann, tmp_path, aspect_ratio=0.75, use_gt_boxes=False, det_file=det)
    assert (exc.value.where, exc.value.what) == (str(det), message)


@pytest.mark.parametrize("mutate, message", [
    (_replace([1]), "not a COCO annotation file (top level is not an object)"),
    (_set("categories", DELETE), "not a COCO annotation file (no 'categories' list)"),
    (_set("images.1", {"file_name": "x.jpg"}), "images[1]: missing field 'id'"),
    (_set("categories.0", {"name": "person"}), "categories[0]: missing field 'id'"),
    (_set("annotations.1", "person"), "annotations[1]: not an object"),
    (_set("annotations.0.keypoints", [1.0, 2.0, 2]), f"annotations[0]: 'keypoints' must be a list of {3 * K} numbers"),
    (_set("annotations.1.image_id", 99), "annotations[1]: image_id 99 not in 'images'"),
])
def test_bad_ground_truth_for_scoring(tmp_path, mutate, message):
    gt = _write(tmp_path / "gt.json", mutate(_coco_gt()))
    with pytest.raises(PipelineError) as exc:
        cm.evaluate_keypoints(gt, [])
    assert (exc.value.where, exc.value.what) == (str(gt), message)


def _result(image_id: int = 1) -> dict:
    ann = _coco_gt()["annotations"][0]
    return {"image_id": image_id, "category_id": 1, "keypoints": list(ann["keypoints"]), "score": 0.9}


@pytest.mark.parametrize("results, message", [
    ({"image_id": 1}, "not a COCO results file (top level is not a list)"),
    ([7], "entry 0: not an object"),
    ([{**_result(), "keypoints": ["a", "b"]}], "entry 0: 'keypoints' is not a list of numbers"),
    ([_result(), {**_result(), "keypoints": [1.0, 2.0, 1.0]}], "entry 1: 'keypoints' has 3 values, expected 51"),
    ([{**_result(), "keypoints": [float("nan")] + _result()["keypoints"][1:]}],
     "entry 0: 'keypoints' has a non-finite value"),
    ([{**_result(), "score": "high"}], "entry 0: 'score' is not a number"),
    ([{**_result(), "score": float("inf")}], "entry 0: 'score' is not finite"),
    ([{**_result(), "image_id": 1.0}], "entry 0: 'image_id' is not an integer"),
])
def test_bad_results_file(tmp_path, results, message):
    gt = _write(tmp_path / "gt.json", _coco_gt())
    res = _write(tmp_path / "res.json", results)  # json writes NaN and Infinity, as Python reads them
    with pytest.raises(PipelineError) as exc:
        cm.evaluate_keypoints(gt, res)
    assert (exc.value.where, exc.value.what) == (str(res), message)


def test_scoring_a_subset_of_the_images(tmp_path):
    """Exact poses on image 1 only: AP 1 over image 1, less over both (image 2's person is missed)."""
    gt = _write(tmp_path / "gt.json", _coco_gt())
    results = [_result(1)]
    assert cm.evaluate_keypoints(gt, results, image_ids=[1])["AP"] == pytest.approx(1.0)
    both = cm.evaluate_keypoints(gt, results)
    assert both["AP"] < 0.9 and both["AR"] == pytest.approx(0.5)
    with pytest.raises(PipelineError, match=r"image ids not in the ground truth: \[3\]"):
        cm.evaluate_keypoints(gt, results, image_ids=[1, 3])


def test_oks_of_identical_and_of_shifted_poses():
    a = np.column_stack([np.arange(K, dtype=float), np.arange(K, dtype=float), np.ones(K)])
    sig = np.asarray(cm.COCO_SIGMAS)
    assert cm.oks_iou(a, a, 100.0, [100.0], sig, None) == pytest.approx([1.0])  # one (K, 3) pose
    b = a.copy()
    b[:, 0] += 2.0  # every joint 2 px off: OKS = mean_j exp(-d^2 / (2 s^2 k_j^2)), s^2 = area, k_j = 2 sigma_j
    want = np.mean(np.exp(-4.0 / (2 * 100.0 * (2 * sig) ** 2)))
    assert cm.oks_iou(a, b[None], 100.0, [100.0], sig, None) == pytest.approx([want], rel=1e-6)
    b[:3, 2] = 0.0  # with a joint-score threshold only the joints above it count
    want_vis = np.mean(np.exp(-4.0 / (2 * 100.0 * (2 * sig[3:]) ** 2)))
    assert cm.oks_iou(a, b[None], 100.0, [100.0], sig, 0.5) == pytest.approx([want_vis], rel=1e-6)
    with pytest.raises(ValueError, match="joints but 16 sigmas"):
        cm.oks_iou(a, b[None], 100.0, [100.0], sig[:16], None)
    with pytest.raises(ValueError, match="1 poses but 2 areas"):
        cm.oks_iou(a, b[None], 100.0, [100.0, 50.0], sig, None)
    with pytest.raises(ValueError, match="needs joint scores"):
        cm.oks_iou(a, b[None, :, :2], 100.0, [100.0], sig, 0.5)
    assert cm.oks_nms([], 0.9) == []


@pytest.mark.parametrize("pred, message", [
    ({"keypoints": np.zeros((K, 3)), "area": 1.0, "image_id": 1}, "entry 0: missing field 'box_score'"),
    ({"keypoints": np.zeros((K, 3)), "box_score": "x", "area": 1.0, "image_id": 1}, "entry 0: could not convert"),
])
def test_rescoring_names_a_malformed_prediction(pred, message):
    with pytest.raises(PipelineError) as exc:
        cm.rescore_and_nms([pred])
    assert exc.value.where == "predictions" and exc.value.what.startswith(message)


# ------------------------------------------------------------------------------------------------ MPII
def _mpii_entry() -> dict:
    return {"image": "000000001.jpg", "center": [100.0, 80.0], "scale": 1.2,
            "joints": [[50.0 + j, 60.0 + j] for j in range(16)], "joints_vis": [1] * 16}


@pytest.mark.parametrize("mutate, message", [
    (_replace({"image": "x.jpg"}), "expected a JSON list of MPII person entries"),
    (_set("0", "x.jpg"), "entry 0 is not an object"),
    (_set("0.image", ""), "entry 0: 'image' must be a file name"),
    (_set("0.center", [1.0]), "entry 0 (000000001.jpg): 'center' must be 2 numbers"),
    (_set("0.scale", -1.0), "entry 0 (000000001.jpg): 'scale' must be a positive number"),
    (_set("0.joints_vis", [1] * 15), "entry 0 (000000001.jpg): 'joints_vis' must be 16 numbers"),
])
def test_bad_mpii_annotation_file(tmp_path, mutate, message):
    ann = _write(tmp_path / "train.json", mutate([_mpii_entry()]))
    with pytest.raises(PipelineError) as exc:
        load_mpii_people(ann, tmp_path)
    assert (exc.value.where, exc.value.what) == (str(ann), message)


def test_mpii_entries_without_joints_and_narrow_inputs(tmp_path):
    """The test split has no joints (zeros, invisible); an input narrower than tall (w/h < 1) widens
    the box's height, HRNet's scale rule: s' = 1.25 s, centre 15 s lower, both 1-based -> 0-based."""
    entry = {k: v for k, v in _mpii_entry().items() if k not in ("joints", "joints_vis")}
    rec, = load_mpii_people(_write(tmp_path / "test.json", [entry]), tmp_path, aspect_ratio=0.5)
    assert not rec["vis"].any() and not rec["joints"].any()
    s = 1.2 * 1.25
    np.testing.assert_allclose(rec["scale"], [s, s / 0.5])
    np.testing.assert_allclose(rec["center"], [99.0, 80.0 + 15.0 * 1.2 - 1.0])
    assert rec["image_id"] == 1


def _gt_valid(n: int = 2) -> dict:
    rng = np.random.default_rng(0)
    return {"dataset_joints": np.array([[np.array([name])] for name in mm.GT_VALID_JOINT_NAMES], dtype=object),
            "jnt_missing": np.zeros((16, n)), "pos_gt_src": rng.uniform(10, 90, (16, 2, n)),
            "headboxes_src": np.stack([np.full((2, n), 10.0), np.full((2, n), 40.0)])}


@pytest.mark.parametrize("key, value, message", [
    ("dataset_joints", np.array([[np.array(["head"])]], dtype=object), "variable 'dataset_joints' has 1 names, expected 16"),
    ("jnt_missing", np.zeros((15, 2)), "variable 'jnt_missing' has shape (15, 2), expected (16, N)"),
    ("headboxes_src", np.zeros((2, 2, 3)), "variable 'headboxes_src' has shape (2, 2, 3), expected (2, 2, 2)"),
])
def test_bad_gt_valid_mat(tmp_path, key, value, message):
    gt = _gt_valid()
    gt[key] = value
    path = tmp_path / "gt_valid.mat"
    savemat(str(path), gt)
    with pytest.raises(PipelineError) as exc:
        mm.load_gt_valid(path)
    assert (exc.value.where, exc.value.what) == (str(path), message)


def test_gt_arrays_and_predictions_must_be_numeric_and_shaped():
    gt = _gt_valid()
    gt["pos_gt_src"] = [["a"]]
    with pytest.raises(PipelineError, match="ground-truth arrays are not numeric"):
        mm.normalized_errors(np.zeros((2, 16, 2)), gt)
    with pytest.raises(PipelineError, match=r"shape \(2, 15, 2\), expected \(N, 16, 2\)"):
        mm.normalized_errors(np.zeros((2, 15, 2)), _gt_valid())
    assert mm._mat_string(np.array([], dtype=object)) == ""


# ------------------------------------------------------------------------------------------------ server scores
@pytest.mark.parametrize("content, message", [
    ({"AP": "nan"}, "field 'AP': not a finite number: 'nan'"),
    ({"AP": 0.7, "ap": 0.7}, "field 'ap': AP given twice"),
    ([[[[[[[[0.5]]]]]]]], "no COCO keypoint metrics found (nested too deep)"),
    ([{"AP": 0.7}, {"AP": 0.6}], "expected a list of 10 numbers (COCOeval.stats) or a JSON object of metrics, "
                                 "got a list of 2 items"),
    ("AP", "expected a JSON object of metrics or a list of 10 numbers, got str"),
])
def test_malformed_server_scores(tmp_path, content, message):
    path = _write(tmp_path / "scores.json", content)
    with pytest.raises(PipelineError) as exc:
        coco_server.parse_server_scores(path)
    assert str(exc.value).startswith(str(path)) and str(exc.value).endswith(message)


def test_server_scores_text_and_file_errors(tmp_path):
    text = tmp_path / "scores.txt"
    text.write_text("AP: 0.7\nAP = 0.71\n")
    with pytest.raises(PipelineError, match=r"scores.txt: line 2: AP given twice"):
        coco_server.parse_server_scores(text)
    with pytest.raises(PipelineError, match="scores file not found"):
        coco_server.parse_server_scores(tmp_path / "none.json")
    binary = tmp_path / "scores.bin"
    binary.write_bytes(b"\xff\xfe\x00\x80")
    with pytest.raises(PipelineError, match="not a text file"):
        coco_server.parse_server_scores(binary)


def test_server_scores_log_what_they_ignore_and_lack(tmp_path, caplog):
    path = _write(tmp_path / "scores.json", {"AP": 0.7, "AP50": 0.9, "note": "run 3"})
    with caplog.at_level(logging.INFO, logger=coco_server.__name__):
        assert coco_server.parse_server_scores(path) == {"AP": 0.7, "AP50": 0.9}
    assert f"{path}: ignored fields note" in caplog.messages
    assert f"{path}: no AP75, APM, APL, AR in the server's scores (Table 2 shows n/a)" in caplog.messages


def test_submission_zip_must_be_named_after_its_results(tmp_path):
    res = _write(tmp_path / "person_keypoints_test-dev2017_x_results.json", [])
    with pytest.raises(PipelineError, match=r"named after its results file \(person_keypoints_test-dev2017_x_results"):
        coco_server.write_submission(res, tmp_path / "other.zip")
    assert not (tmp_path / "other.zip").exists()

