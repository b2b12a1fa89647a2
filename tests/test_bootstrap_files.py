"""The image / person bootstrap's stored tables (pipeline.metrics.coco_bootstrap, mpii_bootstrap): files of
another format or with inconsistent tables stop with one line, and mismatched pairs are refused."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.metrics import coco_bootstrap as cb
from pipeline.metrics import mpii_bootstrap as mb


def _matches(**override) -> cb.CocoMatches:
    """Two images, three detections, two IoU thresholds."""
    fields = dict(image_ids=np.array([1, 2]), num_gt=np.array([1, 2]), det_image=np.array([0, 1, 1]),
                  det_score=np.array([0.9, 0.8, 0.1]), tp=np.array([[True, True, False], [True, False, False]]),
                  ignored=np.zeros((2, 3), bool), iou_thrs=np.array([0.5, 0.75]), rec_thrs=np.linspace(0, 1, 101))
    fields.update(override)
    return cb.CocoMatches(**fields)


@pytest.mark.parametrize("override, message", [
    ({"tp": np.zeros((2, 2), bool)}, "CocoMatches: tp has shape (2, 2), expected (2, 3)"),
    ({"det_image": np.array([0, 1, 2])}, "CocoMatches: det_image points outside image_ids"),
    ({"ignored": np.array([[True, False, False], [False, False, False]])},
     "CocoMatches: a detection is both a true positive and ignored"),
])
def test_inconsistent_match_tables_are_refused(override, message):
    with pytest.raises(ValueError) as exc:
        _matches(**override)
    assert str(exc.value) == message


def test_matches_files_of_another_format_or_content(tmp_path):
    m = _matches()
    good = tmp_path / "good.npz"
    cb.save_matches(m, good)
    stored = dict(np.load(good))
    cases = {
        "partial.npz": ({k: v for k, v in stored.items() if k != "tp"}, "not a COCO matches file (missing tp)"),
        "older.npz": ({**stored, "format": np.int64(cb.MATCHES_FORMAT - 1)},
                      f"matches format {cb.MATCHES_FORMAT - 1}, expected {cb.MATCHES_FORMAT}"),
        "mixed.npz": ({**stored, "det_image": np.array([0, 1, 5])}, "CocoMatches: det_image points outside image_ids"),
    }
    for name, (arrays, message) in cases.items():
        path = tmp_path / name
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
        with pytest.raises(PipelineError) as exc:
            cb.load_matches(path)
        assert str(exc.value) == f"{path}: {message}"


def test_resampling_arguments_and_counts():
    with pytest.raises(ValueError, match="need at least one image, got 0"):
        cb.resample_counts(0)
    with pytest.raises(ValueError, match="need at least one resample, got 0"):
        cb.resample_counts(3, resamples=0)
    with pytest.raises(ValueError, match="finite and non-negative"):
        cb.weighted_ap(_matches(), np.array([1.0, -1.0]))
    num_gt, det_image, score, tp, ignored = cb._collect([None, None], n_thr=2, max_det=20)
    assert num_gt.tolist() == [0, 0] and det_image.size == score.size == 0 and tp.shape == ignored.shape == (2, 0)


def test_pairs_on_other_ground_truth_are_refused():
    with pytest.raises(PipelineError) as exc:
        cb.paired_bootstrap(_matches(), _matches(num_gt=np.array([1, 3])), resamples=5)
    assert str(exc.value) == ("paired bootstrap: the two runs were scored against different ground truth: the "
                              "number of people differs on 1 images (e.g. [2])")


def test_ground_truth_with_several_categories_is_refused(tmp_path):
    kps = [10.0, 10.0, 2] * 17
    gt = {"images": [{"id": 1, "width": 50, "height": 50}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "keypoints": kps, "num_keypoints": 17,
                           "area": 100.0, "iscrowd": 0, "bbox": [0, 0, 20, 20]}],
          "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    res = [{"image_id": 1, "category_id": 1, "keypoints": kps, "score": 1.0}]
    with pytest.raises(PipelineError) as exc:
        cb.coco_image_matches(path, res)
    assert str(exc.value) == f"{path}: ground truth has 2 categories; the image bootstrap supports one (person)"


def _correct(threshold: float = 0.5, **override) -> mb.MpiiCorrect:
    fields = dict(correct=np.array([[True, False], [True, True]]), visible=np.ones((2, 2), bool),
                  in_mean=np.array([True, True]), threshold=threshold)
    fields.update(override)
    return mb.MpiiCorrect(**fields)


def test_mpii_correctness_tables_files_and_pairs(tmp_path):
    with pytest.raises(ValueError, match=r"correct \(2, 2\) and visible \(2, 3\) must be the same"):
        _correct(visible=np.ones((2, 3), bool))
    with pytest.raises(ValueError, match=r"in_mean has shape \(3,\)"):
        _correct(in_mean=np.ones(3, bool))
    m = _correct()
    assert mb.weighted_pckh(m, np.array([1.0, 1.0])).tolist() == [75.0]  # 3 of 4 visible joints
    with pytest.raises(ValueError, match=r"counts has shape \(3,\), expected \(R, 2\)"):
        mb.weighted_pckh(m, np.ones(3))
    with pytest.raises(ValueError, match="finite and non-negative"):
        mb.weighted_pckh(m, np.array([np.nan, 1.0]))
    with pytest.raises(PipelineError, match="PCKh thresholds differ: 0.5 vs 0.1"):
        mb.paired_bootstrap_pckh(m, _correct(0.1), resamples=5)
    with pytest.raises(PipelineError, match="file not found"):
        mb.load_correct(tmp_path / "none.npz")
    foreign = tmp_path / "foreign.npz"
    with open(foreign, "wb") as fh:
        np.savez(fh, preds=np.zeros((2, 16, 2)))
    with pytest.raises(PipelineError) as exc:
        mb.load_correct(foreign)
    assert str(exc.value).startswith(f"{foreign}: not an MPII correctness file (KeyError: ")
