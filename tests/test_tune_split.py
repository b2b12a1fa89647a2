"""The tune split: hyperparameters are chosen on images held out of the TRAINING data, never on val.

Checks the draw (by image, disjoint, deterministic, of the stated fraction), its ground-truth files
(COCO subset scored by pycocotools exactly as an independently built subset; MPII head boxes by hand),
that runs without ``split: tune`` resolve and read their training split exactly as before, the
one-line config errors, and a smoke ``split: tune`` run trained and evaluated end to end with tune
metrics and no val metric.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import is_tuning_run, load_params, report_run_names, resolve_run, run_names, validate_params
from pipeline.data import tune
from pipeline.data.coco import load_coco_people
from pipeline.engine import builders
from pipeline.errors import PipelineError
from pipeline.metrics import mpii as mpii_metrics

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = "hdm-benchmark-smoke"
TUNE_RUN = "coco_hrnet_w32_tune"  # the example tuning run of this test (not in params.yaml)


# --------------------------------------------------------------------------- the draw
def test_tune_keys_follow_the_documented_sha256_ranking():
    """Pinned: keys 1..10, seed 0, fraction 0.3 -> the 3 keys of smallest sha256("0/<key>")."""
    keys = list(range(1, 11))
    want = set(sorted(map(str, keys), key=lambda k: hashlib.sha256(f"0/{k}".encode()).hexdigest())[:3])
    assert tune.tune_keys(keys, 0.3, 0) == want
    assert tune.tune_keys(keys, 0.3, 0) == {"4", "6", "10"}  # the same on every machine and NumPy version


def test_tune_keys_are_deterministic_and_independent_of_order():
    keys = list(range(100, 400, 3))
    shuffled = list(np.random.default_rng(5).permutation(keys))
    assert tune.tune_keys(keys, 0.2, 7) == tune.tune_keys(shuffled, 0.2, 7) == tune.tune_keys(keys + keys, 0.2, 7)
    assert tune.tune_keys(keys, 0.2, 7) != tune.tune_keys(keys, 0.2, 8)  # the seed matters


@pytest.mark.parametrize("n,fraction,want", [(100, 0.2, 20), (10, 0.25, 2), (3, 0.01, 1), (3, 0.99, 2),
                                              (2, 0.5, 1)])
def test_tune_count_covers_the_fraction_and_leaves_both_sides_non_empty(n, fraction, want):
    assert tune.tune_count(n, fraction) == want
    assert len(tune.tune_keys(range(n), fraction, 0)) == want


def test_a_single_training_image_cannot_be_split():
    with pytest.raises(PipelineError, match="at least 2"):
        tune.tune_keys([1], 0.5, 0)


# --------------------------------------------------------------------------- ground-truth files
def test_coco_subset_keeps_the_tune_images_their_annotations_and_the_rest():
    train = {"info": {"v": 1}, "categories": [{"id": 1, "name": "person"}],
             "images": [{"id": i, "file_name": f"{i}.jpg", "width": 10, "height": 10} for i in range(1, 11)],
             "annotations": [{"id": 100 + i, "image_id": i % 10 + 1} for i in range(30)]}
    sub = tune.coco_tune_subset(train, 0.3, 0)
    assert [img["id"] for img in sub["images"]] == [4, 6, 10]
    assert sorted(a["id"] for a in sub["annotations"]) == [103, 105, 109, 113, 115, 119, 123, 125, 129]
    assert sub["categories"] == train["categories"] and sub["info"] == {"v": 1}


def _mpii_entry(image: str, neck_vis: int = 1) -> dict:
    joints = [[float(20 + j), float(30 + 2 * j)] for j in range(16)]
    joints[tune.MPII_NECK], joints[tune.MPII_HEAD_TOP] = [11.0, 20.0], [11.0, 10.0]
    vis = [1] * 16
    vis[3] = 0
    vis[tune.MPII_NECK] = neck_vis
    return {"image": image, "center": [30.0, 40.0], "scale": 1.0, "joints": joints, "joints_vis": vis}


def test_mpii_tune_head_box_is_the_square_on_the_neck_to_head_top_segment():
    """Neck (11, 20), head top (11, 10): side 10, box [[6, 10], [16, 20]]; PCKh head size 0.6·√2·10.
    A person without the neck labelled has no head size: every joint counts as missing."""
    gt = tune.mpii_tune_gt([_mpii_entry("a.jpg"), _mpii_entry("b.jpg", neck_vis=0)])
    np.testing.assert_allclose(gt["headboxes_src"][:, :, 0], [[6, 10], [16, 20]])
    assert gt["jnt_missing"][:, 0].tolist() == [0, 0, 0, 1] + [0] * 12
    assert gt["jnt_missing"][:, 1].tolist() == [1] * 16
    # 1-based ground truth; a 0-based prediction off by 4.2 px (< 0.5 · 8.49) is correct, by 4.3 px not
    pos0 = np.transpose(gt["pos_gt_src"], (2, 0, 1)) - 1.0
    head = 0.6 * np.sqrt(2) * 10
    near = pos0 + np.array([0.49 * head, 0.0])
    far = pos0 + np.array([0.51 * head, 0.0])
    assert mpii_metrics.pckh(near, gt)["Mean"] == pytest.approx(100.0)
    assert mpii_metrics.pckh(far, gt)["Mean"] == pytest.approx(0.0)


# --------------------------------------------------------------------------- config
@pytest.fixture(scope="module")
def params():
    return load_params(ROOT / "params.yaml", "smoke")


def _with_tune_run(p: dict, dataset: str = "coco") -> dict:
    q = copy.deepcopy(p)
    q["study"]["runs"][f"{dataset}_hrnet_w32_tune"] = {"dataset": dataset, "arch": "hrnet_w32", "loss": "mse",
                                                       "split": "tune"}
    return validate_params(q)


def test_runs_without_split_resolve_as_if_no_profile_had_a_tune_split(params):
    bare = copy.deepcopy(params)
    for prof in bare["profiles"].values():
        prof.pop("tune")
    for profile in ("demo", "smoke", "paper"):
        for run in run_names(params, study=True):
            cfg = resolve_run(params, run, profile)
            assert "split" not in cfg and "tune" not in cfg
            assert json.dumps(cfg, sort_keys=True) == json.dumps(resolve_run(bare, run, profile), sort_keys=True)


def test_a_tune_run_resolves_with_the_profiles_split_and_stays_out_of_the_report(params):
    p = _with_tune_run(params)
    cfg = resolve_run(p, TUNE_RUN, "smoke")
    assert cfg["split"] == "tune" and cfg["tune"] == {"fraction": 0.25, "seed": 0}
    assert builders.holdout_split(cfg) == "tune"
    assert is_tuning_run(p, TUNE_RUN) and TUNE_RUN in run_names(p, study=True)
    assert TUNE_RUN not in report_run_names(p, study=True)
    assert report_run_names(p, study=True) == run_names(params, study=True)


@pytest.mark.parametrize("edit,key", [
    (lambda p: p["study"]["runs"]["x"].update(split="val"), "study.runs.x.split"),
    (lambda p: p["profiles"]["smoke"]["tune"].update(fraction=1.0), "profiles.smoke.tune.fraction"),
    (lambda p: p["profiles"]["smoke"]["tune"].update(stride=2), "profiles.smoke.tune.stride"),
    (lambda p: p["profiles"]["demo"].pop("tune"), "profiles.demo.tune"),
])
def test_bad_tune_config_is_one_line_naming_the_key(params, edit, key):
    p = copy.deepcopy(params)
    p["study"]["runs"]["x"] = {"dataset": "coco", "arch": "hrnet_w32", "loss": "mse", "split": "tune"}
    edit(p)
    with pytest.raises(PipelineError) as err:
        validate_params(p)
    assert err.value.where == f"params.yaml: {key}" and "\n" not in str(err.value)


# --------------------------------------------------------------------------- smoke data
@pytest.fixture(scope="module")
def smoke(tmp_path_factory, params):
    """The smoke COCO and MPII data and an MLflow store in a scratch folder (cwd while the tests run)."""
    from pipeline.data.prepare import prepare_dataset
    from pipeline.tracking import init_store

    d = tmp_path_factory.mktemp("tune_smoke")
    uri = f"sqlite:///{d / 'store' / 'mlflow.db'}"
    (d / "pretrained").symlink_to(ROOT / "pretrained")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        prepare_dataset(params, "smoke", "coco", progress=False)
        prepare_dataset(params, "smoke", "mpii", progress=False)
        init_store(uri, EXPERIMENT)
        yield d, _with_tune_run(_with_tune_run(params), "mpii"), uri


def _independent_coco_subset(cfg: dict) -> dict:
    """The tune images' ground truth built here from the train file and the documented rule."""
    train = json.loads((Path(cfg["data"]["root"]) / builders.COCO_SPLITS["train"][0]).read_text())
    ids = sorted(img["id"] for img in train["images"])
    n = min(max(round(cfg["tune"]["fraction"] * len(ids)), 1), len(ids) - 1)
    chosen = set(sorted(ids, key=lambda i: hashlib.sha256(f"{cfg['tune']['seed']}/{i}".encode()).hexdigest())[:n])
    return {**train, "images": [i for i in train["images"] if i["id"] in chosen],
            "annotations": [a for a in train["annotations"] if a["image_id"] in chosen]}


def test_normal_training_split_is_unchanged_and_tune_runs_hold_tune_images_out(smoke):
    _, p, _ = smoke
    normal = resolve_run(p, "coco_hrnet_w32_mse", "smoke")
    root = Path(normal["data"]["root"])
    direct = load_coco_people(root / builders.COCO_SPLITS["train"][0], root / builders.COCO_SPLITS["train"][1],
                              aspect_ratio=builders.aspect_ratio(normal))
    assert [r["ann_id"] for r in builders.records(normal, "train")] == [r["ann_id"] for r in direct]

    cfg = resolve_run(p, TUNE_RUN, "smoke")
    train, held = builders.records(cfg, "train"), builders.records(cfg, "tune")
    assert held and train
    assert not {r["image_id"] for r in train} & {r["image_id"] for r in held}  # disjoint by image
    assert sorted(r["ann_id"] for r in train + held) == sorted(r["ann_id"] for r in direct)  # nobody lost
    subset = _independent_coco_subset(cfg)
    assert {r["image_id"] for r in held} <= {img["id"] for img in subset["images"]}
    assert len(subset["images"]) == round(0.25 * 24)
    # the derived files sit outside the dataset folder and never read val
    gt = builders.ground_truth(cfg, "tune")
    assert root not in gt.parents and "_tune" in gt.parts
    assert json.loads(gt.read_text()) == subset


def test_mpii_tune_split_is_disjoint_by_image_and_its_ground_truth_aligns(smoke):
    _, p, _ = smoke
    cfg = resolve_run(p, "mpii_hrnet_w32_tune", "smoke")
    normal = resolve_run(p, "mpii_hrnet_w32_mse", "smoke")
    everyone = builders.records(normal, "train")
    train, held = builders.records(cfg, "train"), builders.records(cfg, "tune")
    names = lambda recs: {Path(r["image_path"]).name for r in recs}  # noqa: E731
    assert held and not names(train) & names(held)
    assert len(train) + len(held) == len(everyone)
    gt = mpii_metrics.load_gt_valid(builders.ground_truth(cfg, "tune"))
    assert gt["pos_gt_src"].shape[2] == len(held)
    # ground-truth joints as predictions: every scored joint is correct
    perfect = np.stack([r["joints"] for r in held])
    vis = np.stack([r["vis"] for r in held]) > 0
    np.testing.assert_allclose(np.transpose(gt["pos_gt_src"], (2, 0, 1))[vis] - 1.0, perfect[vis])
    assert mpii_metrics.pckh(perfect, gt)["Mean"] == pytest.approx(100.0)


# --------------------------------------------------------------------------- a tuning run end to end
def test_smoke_tune_run_trains_and_evaluates_on_tune_only(smoke):
    import mlflow
    from pycocotools.coco import COCO as CocoApi
    from pycocotools.cocoeval import COCOeval

    from pipeline.config import Paths
    from pipeline.engine.evaluate import evaluate_run
    from pipeline.engine.train import train_run

    d, p, uri = smoke
    cfg = resolve_run(p, TUNE_RUN, "smoke")
    cfg["train"]["epochs"] = 1
    ckpt = torch.load(train_run(cfg, tracking_uri=uri, experiment=EXPERIMENT, progress=False),
                      map_location="cpu", weights_only=True)
    result = evaluate_run(cfg, tracking_uri=uri, experiment=EXPERIMENT, progress=False)
    metrics = result["metrics"]
    assert 0.0 <= metrics["coco_tune/AP"] <= 1.0 and "coco_tune_dark/AP" in metrics
    assert not [k for k in metrics if k.startswith(("coco_val", "coco_testdev", "mpii_val"))]
    out = Paths("smoke").eval_dir(TUNE_RUN, cfg["seed"])
    assert not (out / "submission").exists()

    # pycocotools on the independently built subset scores the run's results file the same
    gt_file = d / "independent_tune.json"
    gt_file.write_text(json.dumps(_independent_coco_subset(cfg)))
    coco_gt = CocoApi(str(gt_file))
    ev = COCOeval(coco_gt, coco_gt.loadRes(str(out / f"person_keypoints_tune_{TUNE_RUN}_results.json")), "keypoints")
    ev.params.useSegm = None
    ev.evaluate(), ev.accumulate(), ev.summarize()
    assert metrics["coco_tune/AP"] == pytest.approx(ev.stats[0], abs=1e-12)

    mlflow.set_tracking_uri(uri)
    client = mlflow.tracking.MlflowClient()
    run = client.get_run(ckpt["mlflow_run_id"])
    assert run.data.params["split"] == "tune" and run.data.tags["split"] == "tune"
    assert "tune/AP" in run.data.metrics and not [k for k in run.data.metrics if k.startswith(("val/", "val_", "coco_val"))]


def test_the_report_ignores_a_tuning_run_in_mlflow(smoke, tmp_path):
    """The tuning run above sits in the store; the report's runs leave it out and nothing breaks."""
    from pipeline.report.build import build_report

    d, p, uri = smoke
    written = build_report(profile="smoke", tracking_uri=uri, experiment=EXPERIMENT,
                           run_names=report_run_names(p, study=True), seeds=[0], out_dir=tmp_path / "report")
    measured = json.loads((tmp_path / "report" / "measured.json").read_text())
    assert written and TUNE_RUN not in measured["runs"]
    assert TUNE_RUN not in "".join(f.read_text() for f in written if f.suffix in (".md", ".csv"))


def test_smoke_mpii_tune_run_scores_mpii_tune_only(smoke):
    from pipeline.engine.evaluate import evaluate_run
    from pipeline.engine.train import train_run

    _, p, uri = smoke
    cfg = resolve_run(p, "mpii_hrnet_w32_tune", "smoke")
    cfg["train"]["epochs"] = 1
    train_run(cfg, tracking_uri=uri, experiment=EXPERIMENT, progress=False)
    metrics = evaluate_run(cfg, tracking_uri=uri, experiment=EXPERIMENT, progress=False)["metrics"]
    assert 0.0 <= metrics["mpii_tune/Mean"] <= 100.0 and "mpii_tune_dark/Mean" in metrics
    assert not [k for k in metrics if k.startswith("mpii_val")]


def _snakemake_jobs(cwd: Path, *args: str) -> dict[str, set[str]]:
    """Rule → runs that a dry run of ``args`` schedules (train and evaluate jobs)."""
    import re
    import subprocess
    import sys

    out = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-n", "--forceall", *args], cwd=cwd,
                         capture_output=True, text=True, check=True, timeout=300).stdout
    return {rule: set(re.findall(rf"^rule {rule}:\n(?:    .*\n)*?    wildcards: .*run=(\w+)", out, re.M))
            for rule in ("train", "evaluate")}


def test_snakemake_tune_target_runs_tuning_runs_and_the_study_leaves_them_out(tmp_path):
    import yaml

    from project_copy import copy_project

    copy_project(tmp_path)
    p = yaml.safe_load((tmp_path / "params.yaml").read_text())
    p["study"]["runs"][TUNE_RUN] = {"dataset": "coco", "arch": "hrnet_w32", "loss": "mse", "split": "tune"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    tuning = _snakemake_jobs(tmp_path, "tune")
    every = {r for r, spec in {**p["runs"], **p["study"]["runs"], **p["verdict"]["runs"]}.items()
             if spec.get("split") == "tune"}
    assert TUNE_RUN in every and len(every) > 1  # params.yaml's own tuning runs (verdict.runs) and this one
    assert tuning == {"train": every, "evaluate": every}
    study = _snakemake_jobs(tmp_path, "study")
    assert not every & (study["train"] | study["evaluate"]) and study["train"]
    verdict = _snakemake_jobs(tmp_path, "verdict")
    assert every - {TUNE_RUN} <= verdict["train"]  # the verdict's tuning table reads them
