"""Per-person loss and accuracy (Sec. 4's loss–metric consistency): OKS against pycocotools' own
``computeOks``, PCKh per person and mean joint errors by hand, the file's round trip, the per-person
loss against the criterion's per-sample output, and a smoke run whose evaluation writes both files."""
from __future__ import annotations

import contextlib
import io as stdio
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.data.skeleton import COCO_SIGMAS
from pipeline.metrics import consistency

ROOT = Path(__file__).resolve().parent.parent


def _cocoeval_oks(pred: np.ndarray, gt: np.ndarray, v: np.ndarray, area: float) -> float:
    """pycocotools' COCOeval.computeOks on one ground truth and one detection."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    kp_gt = np.concatenate([gt, v[:, None]], 1).ravel().tolist()
    x, y = gt[v > 0].min(0)
    w, h = gt[v > 0].max(0) - [x, y]
    data = {"images": [{"id": 1, "width": 640, "height": 480}], "categories": [{"id": 1, "name": "person"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": area,
                             "bbox": [float(x), float(y), float(w), float(h)], "keypoints": kp_gt,
                             "num_keypoints": int((v > 0).sum())}]}
    with contextlib.redirect_stdout(stdio.StringIO()):
        coco = COCO()
        coco.dataset = data
        coco.createIndex()
        dt = coco.loadRes([{"image_id": 1, "category_id": 1, "score": 1.0,
                            "keypoints": np.concatenate([pred, np.ones((17, 1))], 1).ravel().tolist()}])
        ev = COCOeval(coco, dt, "keypoints")
        ev._prepare()
    return float(ev.computeOks(1, 1)[0, 0])


def test_oks_matches_pycocotools():
    rng = np.random.default_rng(3)
    gt = rng.uniform(50, 400, size=(2, 17, 2))
    pred = gt + rng.normal(0, 6, size=gt.shape)
    v = np.ones((2, 17), dtype=int) * 2
    v[0, [0, 3, 16]] = 0  # unlabelled joints do not count (their predictions are far off on purpose)
    pred[0, [0, 3, 16]] += 300
    v[1, 5] = 1  # labelled but occluded: counts
    area = np.array([5400.0, 812.5])
    got = consistency.object_keypoint_similarity(pred, gt, v, area, COCO_SIGMAS)
    want = [_cocoeval_oks(pred[i], gt[i], v[i], float(area[i])) for i in range(2)]
    assert got == pytest.approx(want, rel=1e-12)
    assert 0 < got[1] < 1 and math.isnan(consistency.object_keypoint_similarity(
        pred[:1], gt[:1], np.zeros((1, 17)), area[:1], COCO_SIGMAS)[0])


def test_person_pckh_and_mean_joint_error_by_hand():
    from pipeline.metrics.mpii import GT_VALID_JOINT_NAMES

    n = 2
    gt_pos = np.tile(np.arange(16, dtype=float)[:, None, None] * 10 + 5, (1, 2, n))  # (16, 2, N), 1-based
    heads = np.zeros((2, 2, n))
    heads[1] = [[50.0, 50.0], [0.0, 0.0]]  # head size 0.6 * 50 = 30 -> threshold 15 px
    missing = np.zeros((16, n), dtype=int)
    missing[0, 1] = 1
    gt = {"dataset_joints": list(GT_VALID_JOINT_NAMES), "jnt_missing": missing, "pos_gt_src": gt_pos,
          "headboxes_src": heads}
    pred = np.transpose(gt_pos - 1.0, (2, 0, 1)).copy()  # exact, 0-based
    pred[0, [0, 1, 2], 0] += 20.0   # person 0: three Mean joints off by 20 px (> 15): wrong
    pred[0, 6, 0] += 100.0          # the pelvis: not in Mean, ignored
    pred[1, 0, 0] += 100.0          # person 1: its missing joint, ignored
    pred[1, 3, 1] += 14.0           # within 15 px: right
    got = consistency.person_pckh(pred, gt)
    assert got.tolist() == [11 / 14, 1.0]  # 14 Mean joints (16 less pelvis, thorax); person 1 has 13 visible
    err = consistency.mean_joint_error(np.array([[[3.0, 4.0], [0, 0]], [[1, 1], [2, 2]]]), np.zeros((2, 2, 2)),
                                       np.array([[1, 1], [0, 0]]))
    assert err[0] == 2.5 and math.isnan(err[1])


def test_consistency_file_round_trip(tmp_path):
    arrays = {"image_id": [7, 7, 9], "loss": [0.5, 0.25, 1.0], "oks": [0.9, 0.8, np.nan],
              "pckh": [np.nan] * 3, "joint_err": [1.0, 2.0, 3.0]}
    path = tmp_path / consistency.CONSISTENCY_FILE
    consistency.save_consistency(path, arrays)
    back = consistency.load_consistency(path)
    assert back["image_id"].dtype == np.int64 and back["loss"].dtype == np.float64
    assert back["image_id"].tolist() == [7, 7, 9] and back["joint_err"].tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError):
        consistency.save_consistency(path, {**arrays, "loss": [1.0]})


def test_per_person_loss_is_the_criterion_on_each_sample_alone():
    """HDM: the collector's one-person calls equal the per-sample sums of one batched reduction="none" call."""
    from pipeline.config import load_params, resolve_run
    from pipeline.engine.mechanism import ValCollector
    from pipeline.losses import HDMLoss

    cfg = resolve_run(load_params(ROOT / "params.yaml", "smoke"), "coco_hrnet_w32_hdm", "smoke")
    w_hm, h_hm = cfg["data"]["heatmap_size"]
    g = torch.Generator().manual_seed(1)
    heat = torch.randn(3, 17, h_hm, w_hm, generator=g)
    kp = torch.rand(3, 17, 2, generator=g) * torch.tensor([w_hm - 1.0, h_hm - 1.0])
    weight = (torch.rand(3, 17, generator=g) > 0.3).float()
    weight[2] = 0  # a person with no weighted joint: NaN, left out of the file later
    batch = {"keypoints": kp, "weight": weight, "target": torch.zeros(3, 17, 1, 1),
             "center": torch.zeros(3, 2, dtype=torch.float64), "scale": torch.ones(3, 2, dtype=torch.float64)}
    col = ValCollector(cfg, torch.device("cpu"), keep_people=2)
    col(batch, heat)
    h = cfg["hdm"]
    per_sample = HDMLoss(epsilon=h["epsilon"], iterations=h["iterations"], demanders=h["demanders"],
                         dead_joints=h["dead_joints"], reduction="none")(heat, kp, weight).sum(1)
    assert col.loss[:2] == pytest.approx(per_sample[:2].tolist(), rel=1e-6) and math.isnan(col.loss[2])
    assert len(col.kept) == 1 and col.kept[0][0].shape[0] == 2


# --------------------------------------------------------------------------- a smoke run end to end
@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke COCO and MPII data and an MLflow store in a scratch folder (cwd while the tests run)."""
    from pipeline.config import load_params
    from pipeline.data.prepare import prepare_dataset
    from pipeline.tracking import init_store

    d = tmp_path_factory.mktemp("consistency_smoke")
    p = load_params(ROOT / "params.yaml", "smoke")
    uri = f"sqlite:///{d / 'store' / 'mlflow.db'}"
    (d / "pretrained").symlink_to(ROOT / "pretrained")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        for ds in ("coco", "mpii"):
            prepare_dataset(p, "smoke", ds, progress=False)
        init_store(uri, "hdm-benchmark-smoke")
        yield d, p, uri


@pytest.mark.parametrize("run", ["coco_hrnet_w32_hdm", "mpii_simplebaseline_mse"])
def test_smoke_evaluation_writes_the_mechanism_files(smoke, run):
    import mlflow

    from pipeline.config import Paths, resolve_run
    from pipeline.engine.evaluate import evaluate_run
    from pipeline.engine.mechanism import CONVERGENCE_FILE
    from pipeline.engine.train import train_run

    d, p, uri = smoke
    cfg = resolve_run(p, run, "smoke")
    cfg["train"]["epochs"] = 1
    ckpt = torch.load(train_run(cfg, tracking_uri=uri, experiment="hdm-benchmark-smoke", progress=False),
                      map_location="cpu", weights_only=True)
    row = ckpt["history"][0]
    assert 0 <= row["val_pos_share"] <= 1 and 0 <= row["val_gt_nonpos_share"] <= 1 and row["val_joint_err"] >= 0
    result = evaluate_run(cfg, tracking_uri=uri, experiment="hdm-benchmark-smoke", progress=False)
    out = Paths("smoke").eval_dir(run, 0)
    arrays = consistency.load_consistency(out / consistency.CONSISTENCY_FILE)
    n = len(arrays["image_id"])
    assert n > 0 and result["metrics"]["val_consistency/n_people"] == n
    assert np.isfinite(arrays["loss"]).all() and (arrays["loss"] >= 0).all() and np.isfinite(arrays["joint_err"]).all()
    coco = run.startswith("coco")
    acc, other = (arrays["oks"], arrays["pckh"]) if coco else (arrays["pckh"], arrays["oks"])
    assert ((acc >= 0) & (acc <= 1)).all() and np.isnan(other).all()
    mlflow.set_tracking_uri(uri)
    metrics = mlflow.tracking.MlflowClient().get_run(ckpt["mlflow_run_id"]).data.metrics
    assert metrics["val_consistency/n_people"] == n and "val/sep_ratio" in metrics
    conv = out / CONVERGENCE_FILE
    assert conv.is_file() == (cfg["loss"] == "hdm")
    if conv.is_file():
        c = json.loads(conv.read_text())
        assert c["tolerances"] == [1e-2, 1e-3, 1e-4, 1e-6] and c["cap"] == 1000 and c["heatmaps"] > 0
        assert 1 <= c["iterations_median"][0] <= c["iterations_median"][-1] <= c["iterations_max"][-1] <= 1000
