"""DVC over a Snakemake run (docs/dvc.md), on the tiny `smoke` profile in a scratch copy of the project.

After `snakemake --cores all`, `dvc commit -f` records every stage's outputs in dvc.lock: `dvc status` then
has nothing to do, and Snakemake still has nothing to do either (the command leaves the files it made
as they were). `dvc metrics show` lists each run's headline numbers, not every diagnostic.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.engine.evaluate import HEADLINE_FILE, headline_metrics
from project_copy import copy_project

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# One run per dataset: dvc.yaml's data stage makes both manifests, so Snakemake must make them too.
RUNS = ["coco_hrnet_w32_mse", "mpii_hrnet_w32_mse"]
UP_TO_DATE = "Data and pipelines are up to date."
COCO_HEADLINE = {f"{split}/{stat}" for split in ("coco_val", "coco_testdev")
                 for stat in ("AP", "AP50", "AP75", "APM", "APL", "AR")}
MPII_HEADLINE = {"mpii_val/Mean", "mpii_val/Mean_at_0.1"}


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """A command that must succeed."""
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return res


def _says(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Everything a command that must succeed prints."""
    res = _run(cmd, cwd, env)
    return res.stdout + res.stderr


def _smoke_params(d: Path) -> None:
    """The copy's params.yaml: smoke profile, :data:`RUNS` only, one epoch."""
    params = yaml.safe_load((d / "params.yaml").read_text())
    params["profile"] = "smoke"
    params["runs"] = {k: v for k, v in params["runs"].items() if k in RUNS}
    params.pop("verdict", None)  # its fine-tune runs start from main runs left out here
    params["profiles"]["smoke"]["train"]["epochs"] = 1
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def synced(tmp_path_factory) -> tuple[Path, dict[str, str], str]:
    """(project, environment, `dvc status` before the sync) after Snakemake's run and `dvc commit -f`."""
    d = tmp_path_factory.mktemp("project")
    copy_project(d)
    shutil.copytree(ROOT / ".dvc", d / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    shutil.copy(ROOT / "dvc.yaml", d / "dvc.yaml")
    _smoke_params(d)
    (d / ".gitignore").write_text("/data/\n/results/\n/logs/\n/mlflow.db\n/mlruns/\n__pycache__/\n"
                                  "/.snakemake/\n/reports/\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{d / 'mlflow.db'}", "DVC_NO_ANALYTICS": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        _run(cmd, d, env)
    _run([str(BIN / "snakemake"), "--cores", "2"], d, env)
    before = _says([str(BIN / "dvc"), "status"], d, env)
    _run([str(BIN / "dvc"), "commit", "-f"], d, env)
    return d, env, before


def test_dvc_commit_brings_the_lock_up_to_date_and_snakemake_stays_so(synced):
    d, env, before = synced
    assert UP_TO_DATE not in before  # Snakemake's run alone leaves dvc.lock behind
    assert UP_TO_DATE in _says([str(BIN / "dvc"), "status"], d, env)
    assert UP_TO_DATE in _says([str(BIN / "dvc"), "repro", "--dry"], d, env)
    # Snakemake compares dates for files over its checksum limit (1 MB, smaller than a demo or paper
    # checkpoint): a limit under the smoke checkpoints' size makes it do so here
    again = _says([str(BIN / "snakemake"), "-n", "--max-checksum-file-size", "1000"], d, env)
    assert "Nothing to be done" in again, again[-3000:]


def test_dvc_metrics_show_lists_the_headline_numbers(synced):
    d, env, _ = synced
    shown = json.loads(_run([str(BIN / "dvc"), "metrics", "show", "--json"], d, env).stdout)
    assert len(shown) == 1  # the workspace
    files = next(iter(shown.values()))["data"]
    assert set(files) == {f"results/smoke/eval/{run}/seed0/{HEADLINE_FILE}" for run in RUNS}
    for path, entry in files.items():
        headline = json.loads((d / path).read_text())
        everything = json.loads(((d / path).parent / "metrics.json").read_text())["metrics"]
        assert headline == {k: everything[k] for k in headline}
        assert len(everything) > 3 * len(headline)  # the diagnostics stay in metrics.json
        assert entry["data"] == {k: v for k, v in headline.items() if v is not None}  # DVC leaves nulls out
    keys = {run: set(json.loads((d / f"results/smoke/eval/{run}/seed0/{HEADLINE_FILE}").read_text()))
            for run in RUNS}
    assert keys == {"coco_hrnet_w32_mse": COCO_HEADLINE,  # synthetic test-dev has ground truth
                    "mpii_hrnet_w32_mse": MPII_HEADLINE}


def test_headline_keeps_each_splits_main_numbers_only():
    metrics = {"coco_val/AP": 0.5, "coco_val/APM": None, "coco_val/AR75": 0.4, "coco_val_dark/AP": 0.6,
               "coco_val_gtbox/AP": 0.7, "coco_tune/AR": 0.3, "diag/err.nose": 1.5, "mpii_val/Mean": 80.0,
               "mpii_val/Mean_at_0.1": 20.0, "mpii_val/Mean_at_0.11": 21.0, "mpii_val/Head": 90.0,
               "val_consistency/n_people": 8.0}
    assert headline_metrics(metrics) == {"coco_val/AP": 0.5, "coco_val/APM": None, "coco_tune/AR": 0.3,
                                         "mpii_val/Mean": 80.0, "mpii_val/Mean_at_0.1": 20.0}
    assert HEADLINE_FILE == "headline.json"
