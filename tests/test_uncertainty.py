"""Confidence intervals (seeds: Student t; images: paired bootstrap) checked against references.

The COCO bootstrap is checked against pycocotools itself: with all counts 1 its AP must be
COCOeval's, and with integer counts it must be COCOeval's AP on a data set where every image
is physically copied that many times (new image and annotation ids) -- an independent
reference that shares none of the vectorised code.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from pipeline.errors import PipelineError
from pipeline.metrics import coco as cm
from pipeline.metrics import coco_bootstrap as cb
from pipeline.metrics import mpii as mm
from pipeline.metrics import mpii_bootstrap as mb
from pipeline.metrics.uncertainty import Interval, paired_delta, percentile_interval, t_interval
from test_metrics import _TEMPLATE, _ann

# ------------------------------------------------------------------------------------------------
# t-intervals over seeds
# ------------------------------------------------------------------------------------------------
# Student t quantile with 2 degrees of freedom has a closed form: t_p = (2p - 1) / sqrt(2p(1 - p))
T_975_2DOF = (2 * 0.975 - 1) / math.sqrt(2 * 0.975 * 0.025)  # 4.3027


def test_t_interval_hand_computed():
    iv = t_interval([1.0, 2.0, 3.0])
    half = T_975_2DOF * 1.0 / math.sqrt(3)  # s = 1
    assert (iv.mean, iv.n, iv.method) == (2.0, 3, "t")
    assert iv.low == pytest.approx(2.0 - half, abs=1e-12)
    assert iv.high == pytest.approx(2.0 + half, abs=1e-12)
    assert iv.half_width == pytest.approx(half, abs=1e-12)
    assert iv.format() == "2.0 ± 2.5 (n=3)"
    # a normal (z = 1.96) interval, 2 ± 1.13, would wrongly exclude 0; the t-interval does not
    assert iv.low < 0 < iv.high and not iv.excludes_zero


@pytest.mark.parametrize("values, level", [
    ([0.751, 0.755, 0.749], 0.95),
    ([75.1, 74.2, 76.0, 75.5, 74.9], 0.95),
    ([0.1, -0.3, 0.25, 0.05], 0.9),
])
def test_t_interval_matches_scipy(values, level):
    iv = t_interval(values, level)
    x = np.asarray(values)
    lo, hi = stats.t.interval(level, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert iv.mean == pytest.approx(x.mean(), abs=1e-14)
    assert iv.low == pytest.approx(lo, abs=1e-12)
    assert iv.high == pytest.approx(hi, abs=1e-12)


def test_t_interval_single_and_empty():
    one = t_interval([0.7])
    assert one.method == "none" and one.n == 1 and one.mean == 0.7
    assert math.isnan(one.low) and math.isnan(one.high)
    assert not one.excludes_zero
    assert one.format(100) == "70.0 (n=1)"
    empty = t_interval([])
    assert empty.n == 0 and math.isnan(empty.mean) and empty.format() == "n/a (n=0)"
    with pytest.raises(ValueError):
        t_interval([1.0, float("nan")])
    with pytest.raises(ValueError):
        t_interval([1.0, 2.0], level=1.0)


def test_interval_format_and_excludes_zero():
    assert Interval(0.7531, 0.7491, 0.7571, 3, "t").format(100) == "75.3 ± 0.4 (n=3)"
    assert Interval(0.7531, 0.748, 0.759, 1000, "bootstrap").format(100) == "75.3 [74.8, 75.9] (boot)"
    assert Interval(0.006, 0.003, 0.009, 3, "t").format(100, signed=True) == "+0.6 ± 0.3 (n=3)"
    assert Interval(-0.0004, -0.002, 0.001, 500, "bootstrap").format(100, signed=True) == "0.0 [-0.2, +0.1] (boot)"
    assert Interval(0.5, 0.1, 0.9, 3, "t").excludes_zero
    assert Interval(-0.5, -0.9, -0.1, 3, "t").excludes_zero
    assert not Interval(0.5, -0.1, 0.9, 3, "t").excludes_zero
    assert not Interval(0.0, 0.0, 0.0, 3, "bootstrap").excludes_zero
    with pytest.raises(ValueError):
        Interval(0.0, 0.0, 0.0, 3, "normal")


def test_paired_delta_pairs_by_seed_not_by_position():
    # seeds shift both methods alike; the per-seed difference is ~1 with little noise
    a = {2: 31.0, 0: 10.9, 1: 21.1, 9: 100.0}   # insertion order differs from b's; seed 9 unpaired
    b = {0: 10.0, 1: 20.0, 2: 30.0, 7: -50.0}   # seed 7 unpaired
    iv = paired_delta(a, b)
    ref = t_interval([10.9 - 10.0, 21.1 - 20.0, 31.0 - 30.0])  # seeds 0, 1, 2
    assert (iv.n, iv.method) == (3, "t")
    assert (iv.mean, iv.low, iv.high) == pytest.approx((ref.mean, ref.low, ref.high), abs=1e-12)
    assert iv.excludes_zero
    # pairing by position would pair 31.0 with 10.0 ...
    positional = t_interval([x - y for x, y in zip([31.0, 10.9, 21.1], [10.0, 20.0, 30.0])])
    # (same mean, but differences 21, -9.1, -8.9): an interval that includes 0
    assert not positional.excludes_zero and positional.half_width > 40 * iv.half_width
    # ... and an unpaired comparison (Welch) cannot see the difference through the seed spread
    welch = stats.ttest_ind([10.9, 21.1, 31.0], [10.0, 20.0, 30.0], equal_var=False)
    assert welch.pvalue > 0.5
    assert paired_delta({1: 0.5}, {2: 0.4}).n == 0


def test_percentile_interval():
    rng = np.random.default_rng(0)
    samples = rng.permutation(np.arange(1000.0))
    iv = percentile_interval(samples, point=500.0)
    assert (iv.mean, iv.n, iv.method) == (500.0, 1000, "bootstrap")
    # linear interpolation: position 0.025 * 999 = 24.975
    assert iv.low == pytest.approx(24.975, abs=1e-9)
    assert iv.high == pytest.approx(974.025, abs=1e-9)
    iv90 = percentile_interval(samples, 500.0, level=0.9)
    assert iv90.low == pytest.approx(49.95, abs=1e-9) and iv90.high == pytest.approx(949.05, abs=1e-9)
    with_nan = percentile_interval(np.append(samples, [np.nan, np.nan]), 500.0)
    assert with_nan.n == 1000 and with_nan.low == iv.low
    none = percentile_interval([np.nan], 0.3)
    assert none.method == "none" and math.isnan(none.low)


# ------------------------------------------------------------------------------------------------
# COCO: synthetic ground truth and results in the real file formats
# ------------------------------------------------------------------------------------------------
IMAGE_IDS = [3, 5, 8, 13, 21, 34, 55, 89]
CROWDED = 3       # 24 people + a crowd region: more than 20 detections
NO_DETECTIONS = 55
NO_GT = 89


def _coco_case(rng: np.random.Generator, noise_scale: float = 1.0):
    """(gt dict, results list): several people per image, crowd, a zero-keypoint person, FPs."""
    anns, results = [], []

    def add_det(image_id, xy, score):
        kp = np.concatenate([xy, rng.uniform(0.3, 1.0, (17, 1))], axis=1)
        results.append({"image_id": image_id, "category_id": 1,
                        "keypoints": kp.reshape(-1).tolist(), "score": float(score)})

    for img in IMAGE_IDS:
        n_people = 24 if img == CROWDED else (0 if img == NO_GT else int(rng.integers(1, 5)))
        for _ in range(n_people):
            w, h = rng.uniform(30, 140), rng.uniform(80, 320)
            x0, y0 = rng.uniform(0, 500), rng.uniform(0, 300)
            xy = _TEMPLATE * [w, h] + [x0, y0]
            v = np.full(17, 2)
            v[rng.random(17) < 0.2] = 0
            gt_xy = np.where(v[:, None] > 0, xy, 0.0)
            anns.append(_ann(len(anns) + 1, img, gt_xy, v, 0.55 * w * h, [x0, y0, w, h]))
            if img != NO_DETECTIONS and rng.random() < 0.85:
                sigma = noise_scale * rng.choice([1.0, 3.0, 6.0, 10.0, 20.0])
                add_det(img, xy + rng.normal(0, sigma, xy.shape), rng.uniform(0.05, 1.0))
                if rng.random() < 0.15:  # a duplicate pose: a false positive once the first matched
                    add_det(img, xy + rng.normal(0, 2 * sigma, xy.shape), rng.uniform(0.05, 1.0))
        if img in (CROWDED, 8):
            # a crowd region (COCO's crowd annotations have no keypoints) and a detection in it
            box = [300.0, 20.0, 150.0, 200.0]
            crowd = _ann(len(anns) + 1, img, np.zeros((17, 2)), np.zeros(17, int), 20000.0, box)
            crowd["iscrowd"] = 1
            anns.append(crowd)
            add_det(img, _TEMPLATE * [60, 150] + [330.0, 40.0], rng.uniform(0.05, 1.0))
        if img in (5, CROWDED):
            # a person whose keypoints are all unlabelled (ignored) and a detection on them
            box = [20.0, 200.0, 60.0, 150.0]
            anns.append(_ann(len(anns) + 1, img, np.zeros((17, 2)), np.zeros(17, int), 6000.0, box))
            add_det(img, _TEMPLATE * [50, 140] + [25.0, 205.0], rng.uniform(0.05, 1.0))
        if img != NO_DETECTIONS:
            for _ in range(int(rng.integers(1, 3))):  # poses where nobody is
                add_det(img, _TEMPLATE * [80, 200] + rng.uniform(0, 400, 2), rng.uniform(0.05, 1.0))
    scores = [r["score"] for r in results]
    assert len(set(scores)) == len(scores), "distinct scores (see the tie note in coco_bootstrap)"
    gt = {
        "images": [{"id": i, "width": 640, "height": 480, "file_name": f"{i:012d}.jpg"} for i in IMAGE_IDS],
        "annotations": anns,
        "categories": [{"id": 1, "name": "person", "supercategory": "person", "keypoints": [], "skeleton": []}],
    }
    return gt, results


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path


@pytest.fixture(scope="module")
def coco_case(tmp_path_factory):
    """Two runs (b noisier) on one ground truth, their files and matches."""
    d = tmp_path_factory.mktemp("coco")
    gt, res_a = _coco_case(np.random.default_rng(11))
    _, res_b = _coco_case(np.random.default_rng(11), noise_scale=1.6)
    gt_path = _write(d / "gt.json", gt)
    pa, pb = _write(d / "res_a.json", res_a), _write(d / "res_b.json", res_b)
    return {"dir": d, "gt": gt, "gt_path": gt_path, "res_a": res_a, "res_b": res_b,
            "path_a": pa, "path_b": pb,
            "m_a": cb.coco_image_matches(gt_path, pa), "m_b": cb.coco_image_matches(gt_path, pb)}


def test_coco_matches_structure(coco_case):
    m = coco_case["m_a"]
    ids = list(m.image_ids)
    assert ids == IMAGE_IDS
    assert m.n_detections == sum(min(20, sum(r["image_id"] == i for r in coco_case["res_a"])) for i in IMAGE_IDS)
    assert np.count_nonzero(m.det_image == ids.index(CROWDED)) == 20  # top 20 kept of more
    assert m.num_gt[ids.index(NO_GT)] == 0 and m.num_gt[ids.index(CROWDED)] == 24
    assert not np.any(m.det_image == ids.index(NO_DETECTIONS)) and m.num_gt[ids.index(NO_DETECTIONS)] > 0
    assert m.ignored.any(axis=0).sum() >= 3  # crowd and zero-keypoint detections
    assert np.all(np.diff(m.det_score) <= 0)
    fp = ~m.tp & ~m.ignored
    assert fp[0].any() and m.tp[0].any() and m.tp[-1].sum() < m.tp[0].sum()


def test_weighted_ap_all_ones_equals_pycocotools(coco_case):
    for key in ("a", "b"):
        m = coco_case[f"m_{key}"]
        ref = cm.evaluate_keypoints(coco_case["gt_path"], coco_case[f"path_{key}"])["AP"]
        ap = cb.weighted_ap(m, np.ones(m.n_images))
        assert ap.shape == (1,)
        assert 0.2 < ref < 0.9  # a non-trivial case
        assert abs(ap[0] - ref) <= 1e-12, (key, ap[0], ref)


def test_weighted_ap_all_ones_with_tied_scores_equals_pycocotools(coco_case, tmp_path):
    # one decimal: many ties within and across images; all-ones must keep COCOeval's order
    tied = [dict(r, score=round(r["score"], 1)) for r in coco_case["res_a"]]
    path = _write(tmp_path / "tied.json", tied)
    m = cb.coco_image_matches(coco_case["gt_path"], path)
    ref = cm.evaluate_keypoints(coco_case["gt_path"], path)["AP"]
    assert abs(cb.weighted_ap(m, np.ones(m.n_images))[0] - ref) <= 1e-12


def _duplicated(gt: dict, results: list, counts: np.ndarray) -> tuple[dict, list]:
    """Copy image i counts[i] times; copies get consecutive new ids in the original order."""
    stride = int(counts.max()) + 1
    images, anns, res = [], [], []
    for rank, img in enumerate(gt["images"]):
        for copy in range(int(counts[rank])):
            new_id = rank * stride + copy + 1
            images.append(dict(img, id=new_id))
            for a in gt["annotations"]:
                if a["image_id"] == img["id"]:
                    anns.append(dict(a, id=len(anns) + 1, image_id=new_id))
            res += [dict(r, image_id=new_id) for r in results if r["image_id"] == img["id"]]
    return dict(gt, images=images, annotations=anns), res


def test_weighted_ap_equals_cocoeval_on_duplicated_data(coco_case, tmp_path):
    gt, m = coco_case["gt"], coco_case["m_a"]
    rows = cb.resample_counts(m.n_images, resamples=3, seed=5)
    rows = np.vstack([rows, [3, 0, 1, 2, 0, 1, 1, 0]])  # drops the crowded image, keeps no-GT one
    got = cb.weighted_ap(m, rows)
    ones = cb.weighted_ap(m, np.ones(m.n_images))[0]
    assert np.all(np.abs(got - ones) > 1e-4), "resamples must change AP for this test to bite"
    for r, counts in enumerate(rows):
        gt_dup, res_dup = _duplicated(gt, coco_case["res_a"], counts)
        g, p = _write(tmp_path / f"gt{r}.json", gt_dup), _write(tmp_path / f"res{r}.json", res_dup)
        ref = cm.evaluate_keypoints(g, p)["AP"]
        assert abs(got[r] - ref) <= 1e-12, (r, counts.tolist(), got[r], ref)


def test_weighted_ap_no_ground_truth_drawn_is_nan(coco_case):
    m = coco_case["m_a"]
    only_no_gt = np.zeros(m.n_images)
    only_no_gt[IMAGE_IDS.index(NO_GT)] = 2
    assert math.isnan(cb.weighted_ap(m, only_no_gt)[0])
    with pytest.raises(ValueError):
        cb.weighted_ap(m, np.ones(m.n_images + 1))


def test_empty_results_give_zero_ap(coco_case, tmp_path):
    empty = _write(tmp_path / "empty.json", [])
    m = cb.coco_image_matches(coco_case["gt_path"], empty)
    assert m.n_detections == 0 and m.n_images == len(IMAGE_IDS)
    assert cb.weighted_ap(m, np.ones(m.n_images))[0] == cm.evaluate_keypoints(coco_case["gt_path"], empty)["AP"] == 0.0


def test_matches_save_load_round_trip(coco_case, tmp_path):
    m = coco_case["m_a"]
    path = tmp_path / "out" / "matches_a"  # no .npz suffix: must be written under this exact name
    cb.save_matches(m, path)
    assert path.is_file() and not list(path.parent.glob(".*tmp"))
    back = cb.load_matches(path)
    for name in ("image_ids", "num_gt", "det_image", "det_score", "tp", "ignored", "iou_thrs", "rec_thrs"):
        assert np.array_equal(getattr(back, name), getattr(m, name)), name
    assert back.max_dets == 20
    counts = cb.resample_counts(m.n_images, 20, seed=2)
    assert np.array_equal(cb.weighted_ap(back, counts), cb.weighted_ap(m, counts))
    with pytest.raises(PipelineError, match="file not found"):
        cb.load_matches(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(PipelineError, match="bad.npz"):
        cb.load_matches(tmp_path / "bad.npz")


def test_resample_counts():
    c = cb.resample_counts(7, resamples=50, seed=3)
    assert c.shape == (50, 7) and c.dtype == np.int64
    assert np.all(c.sum(axis=1) == 7) and c.min() >= 0
    assert np.array_equal(c, cb.resample_counts(7, 50, seed=3))
    assert not np.array_equal(c, cb.resample_counts(7, 50, seed=4))


def test_coco_paired_bootstrap(coco_case):
    m_a, m_b = coco_case["m_a"], coco_case["m_b"]
    same = cb.paired_bootstrap(m_a, m_a, resamples=200, seed=1)
    assert (same["delta"].low, same["delta"].high, same["delta"].mean) == (0.0, 0.0, 0.0)
    assert not same["delta"].excludes_zero
    out = cb.paired_bootstrap(m_a, m_b, resamples=200, seed=1)
    ap_a = cm.evaluate_keypoints(coco_case["gt_path"], coco_case["path_a"])["AP"]
    ap_b = cm.evaluate_keypoints(coco_case["gt_path"], coco_case["path_b"])["AP"]
    assert out["a"].mean == pytest.approx(ap_a, abs=1e-12) and out["b"].mean == pytest.approx(ap_b, abs=1e-12)
    assert out["delta"].mean == pytest.approx(ap_a - ap_b, abs=1e-12)
    for iv in out.values():
        assert iv.method == "bootstrap" and iv.n == 200 and iv.low < iv.high
    # pairing: the difference varies less over resamples than each AP does
    assert out["delta"].high - out["delta"].low < out["a"].high - out["a"].low


def test_coco_paired_bootstrap_needs_same_images(coco_case, tmp_path):
    gt = dict(coco_case["gt"])
    gt["images"] = [i for i in gt["images"] if i["id"] != 21]
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] != 21]
    g = _write(tmp_path / "gt_minus.json", gt)
    p = _write(tmp_path / "res_minus.json", [r for r in coco_case["res_b"] if r["image_id"] != 21])
    m_minus = cb.coco_image_matches(g, p)
    with pytest.raises(PipelineError, match=r"different images: 1 only in run a \(e.g. \[21\]\)"):
        cb.paired_bootstrap(coco_case["m_a"], m_minus, resamples=10)


# ------------------------------------------------------------------------------------------------
# MPII
# ------------------------------------------------------------------------------------------------
def _mpii_case(n: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    pos = rng.uniform(20, 400, (16, 2, n))  # 1-based
    heads = np.zeros((2, 2, n))
    heads[0] = rng.uniform(0, 300, (2, n))
    heads[1] = heads[0] + rng.uniform(15, 60, (2, n))
    missing = (rng.random((16, n)) < 0.15).astype(int)
    gt = {"jnt_missing": missing, "pos_gt_src": pos, "headboxes_src": heads}
    head = 0.6 * np.linalg.norm(heads[1] - heads[0], axis=0)  # (n,)
    err = head[None, :, None] * rng.uniform(0, 0.9, (16, n, 1)) * np.array([0.6, 0.8])
    preds = np.transpose(pos + np.transpose(err, (0, 2, 1)), (2, 0, 1)) - 1.0  # 0-based
    return gt, preds


def test_mpii_weighted_pckh_equals_pckh_all_ones():
    gt, preds = _mpii_case()
    ref = mm.pckh(preds, gt)
    for thr, key in ((0.5, "Mean"), (0.1, "Mean@0.1")):
        m = mb.mpii_person_correct(preds, gt, threshold=thr)
        got = mb.weighted_pckh(m, np.ones(m.n_people))
        assert got.shape == (1,) and got[0] == ref[key], (thr, got[0], ref[key])
    assert 30 < ref["Mean"] < 90


def test_mpii_weighted_pckh_equals_pckh_on_duplicated_people():
    gt, preds = _mpii_case()
    m = mb.mpii_person_correct(preds, gt)
    rows = cb.resample_counts(m.n_people, 4, seed=9)
    got = mb.weighted_pckh(m, rows)
    assert np.all(np.abs(got - mb.weighted_pckh(m, np.ones(m.n_people))[0]) > 1e-6)
    for r, counts in enumerate(rows):
        idx = np.repeat(np.arange(m.n_people), counts)
        dup = {"jnt_missing": gt["jnt_missing"][:, idx], "pos_gt_src": gt["pos_gt_src"][:, :, idx],
               "headboxes_src": gt["headboxes_src"][:, :, idx]}
        assert abs(got[r] - mm.pckh(preds[idx], dup)["Mean"]) <= 1e-12


def test_mpii_paired_bootstrap():
    gt, preds = _mpii_case()
    ids = np.arange(preds.shape[0]) // 2  # two people per image
    m_a = mb.mpii_person_correct(preds, gt, image_ids=ids)
    same = mb.paired_bootstrap_pckh(m_a, m_a, resamples=300, seed=2)
    assert (same["delta"].low, same["delta"].high, same["delta"].mean) == (0.0, 0.0, 0.0)
    worse = preds + np.random.default_rng(1).normal(0, 4.0, preds.shape)
    m_b = mb.mpii_person_correct(worse, gt, image_ids=ids)
    out = mb.paired_bootstrap_pckh(m_a, m_b, resamples=300, seed=2)
    assert out["delta"].mean == pytest.approx(mm.pckh(preds, gt)["Mean"] - mm.pckh(worse, gt)["Mean"], abs=1e-12)
    assert out["a"].n == 300 and out["a"].low < out["a"].mean < out["a"].high
    gt_small, preds_small = _mpii_case(n=39)
    with pytest.raises(PipelineError, match="40 and 39 people"):
        mb.paired_bootstrap_pckh(m_a, mb.mpii_person_correct(preds_small, gt_small), resamples=10)
    other_gt = dict(gt, jnt_missing=1 - gt["jnt_missing"])
    with pytest.raises(PipelineError, match="different ground truth"):
        mb.paired_bootstrap_pckh(m_a, mb.mpii_person_correct(preds, other_gt), resamples=10)


def _correlated_pairs(n_images: int = 200, seed: int = 0) -> np.ndarray:
    """(2 × n_images, 16) correctness: the two people of an image are both right or both wrong."""
    per_image = np.random.default_rng(seed).random(n_images) < 0.5
    return np.repeat(np.repeat(per_image, 2)[:, None], 16, axis=1)


def test_mpii_bootstrap_resamples_images_not_people():
    correct = _correlated_pairs()
    n = correct.shape[0]
    full = dict(correct=correct, visible=np.ones_like(correct), in_mean=np.ones(16, bool))
    by_image = mb.MpiiCorrect(**full, image_ids=np.arange(n) // 2)
    by_person = mb.MpiiCorrect(**full, image_ids=np.arange(n))  # one image per person: people resampled
    w_image = mb.paired_bootstrap_pckh(by_image, by_image, resamples=2000, seed=1)["a"]
    w_person = mb.paired_bootstrap_pckh(by_person, by_person, resamples=2000, seed=1)["a"]
    width_image, width_person = w_image.high - w_image.low, w_person.high - w_person.low
    # 200 independent images, not 400 independent people: the width grows by about sqrt(2)
    assert width_image / width_person == pytest.approx(math.sqrt(2), rel=0.15)
    # by hand: the image counts of a resample expand to its people
    counts = np.array([[2, 0] + [1] * 198])
    expanded = np.repeat(counts, 2, axis=1)
    assert mb.weighted_pckh_by_image(by_image, counts)[0] == mb.weighted_pckh(by_image, expanded)[0]


def test_mpii_bootstrap_needs_image_ids_and_keeps_them_in_the_file(tmp_path):
    correct = _correlated_pairs(10)
    m = mb.MpiiCorrect(correct=correct, visible=np.ones_like(correct), in_mean=np.ones(16, bool))
    with pytest.raises(PipelineError, match="no image id per person"):
        mb.paired_bootstrap_pckh(m, m, resamples=10)
    mb.save_correct(mb.with_image_ids(m, np.arange(20) // 2 + 7), tmp_path / "m.npz")
    assert mb.load_correct(tmp_path / "m.npz").image_ids.tolist() == (np.arange(20) // 2 + 7).tolist()
    mb.save_correct(m, tmp_path / "old.npz")
    assert mb.load_correct(tmp_path / "old.npz").image_ids is None
