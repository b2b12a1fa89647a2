"""End to end on the tiny `smoke` profile: Snakemake runs data → MLflow → train → evaluate →
report in a scratch copy of the project; a second run has nothing to do; bad inputs stop with one
line naming the file and leave no output behind."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from project_copy import copy_project

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RUNS = ["coco_hrnet_w32_mse", "coco_hrnet_w32_hdm", "mpii_hrnet_w32_hdm"]
SEEDS = [0, 1]


_copy_project = copy_project


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A scratch copy set to the smoke profile with three runs, after one full Snakemake run."""
    d = tmp_path_factory.mktemp("project")
    _copy_project(d)
    params = yaml.safe_load((d / "params.yaml").read_text())
    params["profile"] = "smoke"
    params["runs"] = {k: v for k, v in params["runs"].items() if k in RUNS}
    params.pop("verdict", None)  # its fine-tune runs start from main runs left out here
    params["seeds"] = SEEDS
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{d / 'store' / 'mlflow.db'}"}
    first = subprocess.run([str(BIN / "snakemake"), "--cores", "2"], cwd=d, env=env, capture_output=True,
                           text=True, timeout=900)
    return d, env, first


def test_snakemake_builds_every_table(project):
    d, env, first = project
    assert first.returncode == 0, first.stderr[-3000:]
    for i in range(1, 7):
        for ext in ("md", "tex", "csv"):
            assert (d / "reports" / "smoke" / f"table{i}.{ext}").is_file()
    t1 = (d / "reports" / "smoke" / "table1.md").read_text()
    assert "profile: smoke" in t1
    # measured rows for the runs that ran, "not run" for the others
    import pandas as pd

    csv = pd.read_csv(d / "reports" / "smoke" / "table1.csv")
    measured = csv[csv["source"] == "measured"].set_index("run")
    # "partial": a size range without people in the tiny val set leaves APL undefined
    assert measured.loc["coco_hrnet_w32_mse", "status"] in ("ok", "partial")
    assert measured.loc["coco_hrnet_w32_hdm", "status"] in ("ok", "partial")
    assert measured.loc["coco_simplebaseline_mse", "status"] == "not run"
    assert 0.0 <= measured.loc["coco_hrnet_w32_hdm", "AP"] <= 100.0
    # the MSE run's DARK decoding: a line of its own, Δ against the plain decoding, paired by seed
    dark = measured.loc["coco_hrnet_w32_mse+dark"]
    assert dark["status"] in ("ok", "partial") and dark["delta_vs"] == "coco_hrnet_w32_mse" and dark["n"] == 2
    t2 = pd.read_csv(d / "reports" / "smoke" / "table2.csv").query("source == 'measured'").set_index("run")
    assert t2.loc["coco_hrnet_w32_mse+dark", "status"] in ("ok", "partial")  # synthetic test-dev has ground truth
    t3 = pd.read_csv(d / "reports" / "smoke" / "table3.csv")
    row = t3[(t3["source"] == "measured") & (t3["run"] == "mpii_hrnet_w32_hdm")].iloc[0]
    assert row["status"] in ("ok", "partial") and 0.0 <= row["Mean"] <= 100.0
    # two seeds: t-intervals over seeds, the HDM-MSE Δ paired by seed
    hdm = measured.loc["coco_hrnet_w32_hdm"]
    assert hdm["n"] == 2 and hdm["interval"] == "t" and hdm["delta_vs"] == "coco_hrnet_w32_mse"
    assert hdm["ci_low"] <= hdm["AP"] <= hdm["ci_high"] or math.isnan(hdm["ci_low"])
    findings = (d / "reports" / "smoke" / "findings.md").read_text()
    assert "coco_hrnet_w32_hdm" in findings and "Sec. 4" in findings


def test_outputs_per_run(project):
    d, env, _ = project
    for run in RUNS:
        for seed in SEEDS:
            run_dir = d / "results/smoke/runs" / run / f"seed{seed}"
            assert (run_dir / "final.pth").is_file()
            assert (run_dir / "checkpoints/epoch_002.pth").is_file()
            assert (run_dir / "train.log").read_text().count("epoch ") >= 2
            eval_dir = d / "results/smoke/eval" / run / f"seed{seed}"
            text = (eval_dir / "metrics.json").read_text()
            assert "NaN" not in text  # strict JSON for DVC
            metrics = json.loads(text)["metrics"]
            key = "mpii_val/Mean" if run.startswith("mpii") else "coco_val/AP"
            assert key in metrics and "diag/median_err" in metrics
            dark = key.replace("_val", "_val_dark")  # DARK for MSE runs only, from the same heatmaps
            assert (dark in metrics) == run.endswith("_mse"), (run, dark)
            assert (eval_dir / f"{dark.split('/')[0]}.boot.npz").is_file() == run.endswith("_mse")
            assert (eval_dir / ("mpii_val.boot.npz" if run.startswith("mpii") else "coco_val.boot.npz")).is_file()
            if run.startswith("mpii"):  # the MPII bootstrap resamples images: each person's image is stored
                with np.load(eval_dir / "mpii_val.boot.npz") as z:
                    assert "image_ids" in z.files and len(z["image_ids"]) == len(z["correct"])
            if run.startswith("coco"):  # test-dev: DARK has its own results, scores and submission zip
                assert ("coco_testdev_dark/AP" in metrics) == run.endswith("_mse")
                zips = sorted(p.name for p in (eval_dir / "submission").glob("*.zip"))
                assert zips == sorted(f"person_keypoints_test-dev2017_{run}{v}_results.zip"
                                      for v in (("", "_dark") if run.endswith("_mse") else ("",))), zips
    sub = d / "results/smoke/eval/coco_hrnet_w32_hdm/seed0/person_keypoints_test-dev2017_coco_hrnet_w32_hdm_results.json"
    entries = json.loads(sub.read_text())
    assert entries and set(entries[0]) == {"image_id", "category_id", "keypoints", "score"}
    assert (d / "logs/smoke/train_coco_hrnet_w32_hdm-seed1.log").is_file()


def test_mlflow_has_every_run_with_curves(project):
    d, env, _ = project
    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    df = mlflow.search_runs(experiment_names=["hdm-benchmark-smoke"])
    assert sorted(df["tags.mlflow.runName"]) == sorted(f"{r}-seed{s}" for r in RUNS for s in SEEDS)
    assert set(df["status"]) == {"FINISHED"} and set(df["tags.evaluated"]) == {"true"}
    row = df[df["tags.mlflow.runName"] == "coco_hrnet_w32_hdm-seed1"].iloc[0]
    assert row["tags.row"] == "coco_hrnet_w32_hdm" and row["tags.seed"] == "1" and row["params.seed"] == "1"
    assert row["params.hdm.iterations"] == "1000" and row["tags.tables"] == "1,2,6"
    client = mlflow.tracking.MlflowClient()
    assert [m.step for m in client.get_metric_history(row["run_id"], "val/AP")] == [1, 2]
    assert [m.step for m in client.get_metric_history(row["run_id"], "train/loss")] == [1, 2]
    assert "metrics.coco_testdev/AP" in df.columns


def test_second_run_has_nothing_to_do(project):
    d, env, first = project
    assert first.returncode == 0
    again = subprocess.run([str(BIN / "snakemake"), "--cores", "2"], cwd=d, env=env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr


def _cli(d: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=d, env=env, capture_output=True,
                          text=True, timeout=300)


def test_malformed_annotation_stops_training_without_output(project, tmp_path):
    d, env, _ = project
    work = tmp_path / "w"
    work.mkdir()
    _copy_project(work)
    shutil.copy(d / "params.yaml", work / "params.yaml")
    shutil.copytree(d / "data", work / "data")
    shutil.copytree(d / "store", work / "store")
    ann = work / "data/smoke/coco/annotations/person_keypoints_train2017.json"
    data = json.loads(ann.read_text())
    data["annotations"][0]["keypoints"] = data["annotations"][0]["keypoints"][:-3]
    ann.write_text(json.dumps(data))
    res = _cli(work, env, "train", "--run", "coco_hrnet_w32_mse")
    assert res.returncode == 1
    err = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "person_keypoints_train2017.json" in err[0] and "keypoints" in err[0]
    assert not (work / "results/smoke/runs/coco_hrnet_w32_mse/seed0/final.pth").exists()

    ann.write_text("{ not json")
    res = _cli(work, env, "train", "--run", "coco_hrnet_w32_mse")
    assert res.returncode == 1 and "person_keypoints_train2017.json" in res.stderr.strip().splitlines()[-1]


def test_missing_dataset_file_stops_the_data_stage(project, tmp_path):
    d, env, _ = project
    work = tmp_path / "w"
    work.mkdir()
    _copy_project(work)
    params = yaml.safe_load((d / "params.yaml").read_text())
    params["profiles"]["smoke"]["data"]["source"] = "files"  # verify an existing copy instead
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(d / "data/smoke/mpii", work / "data/smoke/mpii")
    (work / "data/smoke/mpii/annot/gt_valid.mat").unlink()
    res = _cli(work, env, "data", "--dataset", "mpii")
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == "error: data/smoke/mpii/annot/gt_valid.mat: file not found"
    assert not (work / "data/smoke/mpii.manifest.json").exists()
    # evaluation without a checkpoint names the checkpoint
    res = _cli(work, env, "evaluate", "--run", "mpii_hrnet_w32_hdm")
    assert res.returncode == 1 and "final.pth: checkpoint not found" in res.stderr


def test_testdev_without_ground_truth_is_submitted_not_scored(project, tmp_path):
    """Real COCO's test-dev ships no ground truth: the evaluation writes the submission zips, logs no
    test-dev scores and says where the zip is (the one branch the synthetic data never takes). Run in
    the project itself (its MLflow store belongs to it), which is put back as it was afterwards."""
    d, env, _ = project
    gt = d / "data/smoke/coco/annotations/person_keypoints_test-dev2017.json"
    out = d / "results/smoke/eval/coco_hrnet_w32_mse/seed0"
    shutil.move(gt, tmp_path / gt.name)
    shutil.move(out, tmp_path / "eval")
    try:
        res = _cli(d, env, "evaluate", "--run", "coco_hrnet_w32_mse")
        assert res.returncode == 0, res.stderr[-2000:]
        metrics = json.loads((out / "metrics.json").read_text())["metrics"]
        assert "coco_val/AP" in metrics and not any(k.startswith("coco_testdev") for k in metrics)
        zips = sorted(p.name for p in (out / "submission").glob("*.zip"))
        assert zips == ["person_keypoints_test-dev2017_coco_hrnet_w32_mse_dark_results.zip",
                        "person_keypoints_test-dev2017_coco_hrnet_w32_mse_results.zip"]
        assert "testdev-scores --run coco_hrnet_w32_mse" in res.stderr
    finally:
        shutil.move(tmp_path / gt.name, gt)
        shutil.rmtree(out, ignore_errors=True)
        shutil.move(tmp_path / "eval", out)
