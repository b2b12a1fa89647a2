"""Ids the readers key on are unique in every annotation file the pipeline reads, checked before use
(pipeline.data.integrity): COCO train / val / test-dev image info and the tune ground truth derived from
train, the ground truth pycocotools scores against, MPII's json; detection files lie on the images of
their annotation file. Then the same at the user's level on the smoke profile: evaluation with a
repeated annotation id, training and evaluation with an image that is not the annotated picture.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import cv2
import pytest
import yaml

from pipeline.data import tune
from pipeline.data.coco import load_coco_people, load_image_ids
from pipeline.data.mpii import load_mpii_people
from pipeline.errors import PipelineError
from pipeline.metrics import coco as coco_metrics

K = 17


def _kps(x: float, y: float) -> list[float]:
    return [v for j in range(K) for v in (x + 3 * j, y + 2 * j, 2)]


def _coco() -> dict[str, Any]:
    """Three images, a person on each (ids 7, 8, 9) and a crowd region."""
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "width": 200, "height": 160} for i in (1, 2, 3)]
    anns = [{"id": 6 + i, "image_id": i, "category_id": 1, "keypoints": _kps(10.0 * i, 5.0 * i),
             "num_keypoints": K, "area": 3000.0, "iscrowd": 0, "bbox": [5.0 * i, 2.0 * i, 80.0, 70.0]}
            for i in (1, 2, 3)]
    anns.append({"id": 900100000001, "image_id": 1, "category_id": 1, "keypoints": [0] * (3 * K),
                 "num_keypoints": 0, "area": 500.0, "iscrowd": 1, "bbox": [150.0, 100.0, 30.0, 30.0]})
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}


def _write(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj))
    return path


def _error(fn, *needles: str) -> PipelineError:
    with pytest.raises(PipelineError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    return info.value


# ----------------------------------------------------------------------------- scoring (pycocotools)
def test_scoring_refuses_ground_truth_with_a_repeated_annotation_id(tmp_path):
    """pycocotools would look image 1's person up by id 8 and find image 2's: a wrong score, exit 0."""
    gt = _coco()
    gt["annotations"][0]["id"] = 8
    gt_file = _write(tmp_path / "person_keypoints_val2017.json", gt)
    results = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
               for a in gt["annotations"] if not a["iscrowd"]]
    err = _error(lambda: coco_metrics.evaluate_keypoints(gt_file, results),
                 "annotation id 8 occurs 2 times", "score people on the wrong images")
    assert err.where == str(gt_file)


@pytest.mark.parametrize("field, index, value, shown", [
    ("images", 1, {"id": 1}, "image id 1 occurs 2 times"),
    ("categories", None, [{"id": 1}, {"id": 1}], "category id 1 occurs 2 times"),
])
def test_scoring_refuses_ground_truth_with_other_repeated_ids(tmp_path, field, index, value, shown):
    gt = _coco()
    if index is None:
        gt[field] = value
    else:
        gt[field][index].update(value)
    gt_file = _write(tmp_path / "gt.json", gt)
    _error(lambda: coco_metrics.evaluate_keypoints(gt_file, []), str(gt_file), shown)


def test_scoring_accepts_two_image_ids_of_one_file(tmp_path):
    """Scoring reads no image: an image-bootstrap copy of an image keeps the file name under a new id."""
    gt = _coco()
    gt["images"][2]["file_name"] = gt["images"][0]["file_name"]
    assert coco_metrics.evaluate_keypoints(_write(tmp_path / "gt.json", gt), [])["AP"] == 0.0


# ----------------------------------------------------------------------------- the readers
def _repeat_annotation_ids(data: dict) -> None:
    data["annotations"][1]["id"] = 7
    data["annotations"][2]["id"] = 900100000001  # the crowd region's id: a second repeated key


@pytest.mark.parametrize("boxes", ["gt", "det"])
def test_the_coco_reader_refuses_repeated_annotation_ids_with_either_boxes(tmp_path, boxes):
    data = _coco()
    _repeat_annotation_ids(data)
    ann = _write(tmp_path / "person_keypoints_val2017.json", data)
    det = _write(tmp_path / "dets.json", [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 9, 9], "score": 1}])
    kwargs = {"use_gt_boxes": False, "det_file": det} if boxes == "det" else {}
    err = _error(lambda: load_coco_people(ann, tmp_path, aspect_ratio=0.75, **kwargs),
                 "annotation id 7 occurs 2 times (and 1 more repeat)")
    assert err.where == str(ann)


@pytest.mark.parametrize("change, shown", [
    (lambda d: d["images"][2].update(id=2), "image id 2 occurs 2 times"),
    (lambda d: d["images"][2].update(file_name=d["images"][0]["file_name"]), "'000000000001.jpg' occurs 2 times"),
])
def test_the_test_dev_image_list_refuses_repeated_images(tmp_path, change, shown):
    info = {k: v for k, v in _coco().items() if k != "annotations"}  # an image-info file
    change(info)
    path = _write(tmp_path / "image_info_test-dev2017.json", info)
    det = _write(tmp_path / "dets.json", [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 9, 9], "score": 1}])
    _error(lambda: load_coco_people(path, tmp_path, aspect_ratio=0.75, use_gt_boxes=False, det_file=det),
           str(path), shown)
    _error(lambda: load_image_ids(path), str(path), shown)


def test_the_tune_ground_truth_is_not_derived_from_a_train_file_with_repeated_ids(tmp_path):
    data = _coco()
    data["annotations"][2]["id"] = 8
    train = _write(tmp_path / "person_keypoints_train2017.json", data)
    out = tmp_path / "_tune" / "person_keypoints_tune.json"
    _error(lambda: tune.write_coco_tune(train, out, 0.5, 0), str(train), "annotation id 8 occurs 2 times")
    assert not out.exists()


# ----------------------------------------------------------------------------- detections
def _dets(image_ids: list[int]) -> list[dict]:
    return [{"image_id": i, "category_id": 1, "bbox": [10, 10, 50, 60], "score": 0.9} for i in image_ids]


def test_a_detection_file_of_another_split_is_refused(tmp_path):
    ann = _write(tmp_path / "person_keypoints_val2017.json", _coco())
    det = _write(tmp_path / "COCO_test-dev2017_detections_AP_H_609_person.json", _dets([57, 58, 57]))
    err = _error(lambda: load_coco_people(ann, tmp_path, aspect_ratio=0.75, use_gt_boxes=False, det_file=det),
                 "none of its 3 person detections lies on an image of person_keypoints_val2017.json",
                 "image id 57")
    assert err.where == str(det)


def test_detections_beyond_a_subset_annotation_file_are_skipped_with_a_count(tmp_path, caplog):
    ann = _write(tmp_path / "ann.json", _coco())
    det = _write(tmp_path / "dets.json", _dets([1, 2, 57, 58, 58]))
    with caplog.at_level(logging.WARNING):
        recs = load_coco_people(ann, tmp_path, aspect_ratio=0.75, use_gt_boxes=False, det_file=det)
    assert [r["image_id"] for r in recs] == [1, 2]
    assert "skipped 3 person detections on 2 images that ann.json does not list (image ids 57, 58)" in caplog.text


# ----------------------------------------------------------------------------- MPII
def _mpii(names: list[str]) -> list[dict]:
    return [{"image": n, "center": [100.0 + i, 80.0], "scale": 1.5, "joints": [[50.0 + j, 60.0] for j in range(16)],
             "joints_vis": [1] * 16} for i, n in enumerate(names)]


def test_mpii_refuses_a_person_listed_twice(tmp_path):
    entries = _mpii(["015601864.jpg", "015601864.jpg", "015599452.jpg"])
    entries[1]["center"] = list(entries[0]["center"])
    path = _write(tmp_path / "valid.json", entries)
    err = _error(lambda: load_mpii_people(path, tmp_path), "('015601864.jpg', 100.0, 80.0, 1.5) occurs 2 times")
    assert err.where == str(path)
    load_mpii_people(_write(tmp_path / "ok.json", _mpii(["015601864.jpg", "015601864.jpg"])), tmp_path)


def test_mpii_refuses_two_image_names_with_one_image_id(tmp_path):
    path = _write(tmp_path / "valid.json", _mpii(["015601864.jpg", "15601864.jpg"]))
    _error(lambda: load_mpii_people(path, tmp_path), str(path),
           "images '015601864.jpg' and '15601864.jpg' both get image id 15601864")


def test_the_mpii_tune_ground_truth_is_not_derived_from_a_train_file_with_a_person_twice(tmp_path):
    entries = _mpii(["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    entries.append(dict(entries[2]))
    train = _write(tmp_path / "train.json", entries)
    out_json, out_mat = tmp_path / "_tune" / "tune.json", tmp_path / "_tune" / "gt_tune.mat"
    _error(lambda: tune.write_mpii_tune(train, out_json, out_mat, 0.5, 0), str(train), "'c.jpg'", "occurs 2 times")
    assert not out_json.exists() and not out_mat.exists()


# ----------------------------------------------------------------------------- the smoke pipeline
RUN = "coco_hrnet_w32_mse"
OUTPUT_ROOTS = ("results", "reports")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The smoke project after data, mlflow-init, train and evaluate of one COCO run."""
    from pipeline.cli import main
    from project_copy import copy_project

    d = tmp_path_factory.mktemp("integrity_base")
    copy_project(d)
    params = yaml.safe_load((d / "params.yaml").read_text())
    params["profile"] = "smoke"  # every run kept (other sections refer to them); one is trained
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
        for args in (["data", "--dataset", "coco"], ["mlflow-init"], ["train", "--run", RUN],
                     ["evaluate", "--run", RUN]):
            assert main(["--quiet", *args]) == 0, args
    return d


@pytest.fixture
def proj(base, tmp_path, monkeypatch):
    """The test's own copy of the smoke project (its store pointed at the copy), as the working directory."""
    from run_project import copy_base

    d = copy_base(base, tmp_path / "p")
    monkeypatch.chdir(d)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
    return d


def _cli_error(capsys, *args: str) -> str:
    """Run the CLI; it must fail with exit 1, no traceback and one ``error:`` line, returned."""
    from pipeline.cli import main

    capsys.readouterr()
    rc = main(["--quiet", *args])
    err = capsys.readouterr().err
    assert rc == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def _outputs(d: Path) -> dict[str, int]:
    return {str(p.relative_to(d)): p.stat().st_mtime_ns for root in OUTPUT_ROOTS for p in (d / root).rglob("*")
            if p.is_file() and p.suffix != ".log"}


def _another_picture(path: Path) -> None:
    """Replace an image by a resized copy: a real JPEG, but not of the annotated size."""
    img = cv2.imread(str(path))
    cv2.imwrite(str(path), cv2.resize(img, (img.shape[1] + 7, img.shape[0] + 5)))


def test_evaluation_refuses_val_ground_truth_with_a_repeated_annotation_id(proj, capsys):
    ann_file = proj / "data/smoke/coco/annotations/person_keypoints_val2017.json"
    data = json.loads(ann_file.read_text())
    first = data["annotations"][0]
    other = next(a for a in data["annotations"] if a["image_id"] != first["image_id"])
    other["id"] = first["id"]
    ann_file.write_text(json.dumps(data))
    before = _outputs(proj)
    line = _cli_error(capsys, "evaluate", "--run", RUN)
    assert f"person_keypoints_val2017.json: annotation id {first['id']} occurs 2 times" in line, line
    assert _outputs(proj) == before


def test_an_image_of_another_size_stops_training_in_a_worker(proj, capsys):
    ann = json.loads((proj / "data/smoke/coco/annotations/person_keypoints_train2017.json").read_text())
    img = ann["images"][0]
    image = proj / "data/smoke/coco/images/train2017" / img["file_name"]
    _another_picture(image)
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["profiles"]["smoke"]["train"].update(epochs=3, workers=1)  # resumes epoch 2, meets the image
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    line = _cli_error(capsys, "train", "--run", RUN)
    assert img["file_name"] in line
    assert f"{img['width'] + 7}×{img['height'] + 5} pixels (per its header) but its annotation says " \
           f"{img['width']}×{img['height']}" in line


def test_an_image_of_another_size_stops_evaluation_leaving_no_output(proj, capsys):
    ann = json.loads((proj / "data/smoke/coco/annotations/person_keypoints_val2017.json").read_text())
    image = proj / "data/smoke/coco/images/val2017" / ann["images"][0]["file_name"]
    _another_picture(image)
    before = _outputs(proj)
    line = _cli_error(capsys, "evaluate", "--run", RUN)
    assert image.name in line and "but its annotation says" in line
    assert _outputs(proj) == before
