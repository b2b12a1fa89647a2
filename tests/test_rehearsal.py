"""The paper run rehearsed end to end: the ``rehearsal`` profile (the paper profile at toy sizes, CPU)
through Snakemake as a user runs it, from downloads in the real archives' layout to the report, then
the COCO server's test-dev scores loaded in each accepted format, and the DVC front-end's stages.

One Snakemake run of all 19 paper runs (plus data, MLflow store, evaluations and report) is shared by
the module; it is stopped by SIGTERM while a training job is between epochs, as a cluster's time limit
stops it, and the same command then finishes the work.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from project_copy import copy_project

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PROFILE = "rehearsal"
SNAKEMAKE = [str(BIN / "snakemake"), "--cores", "2", "--config", f"profile={PROFILE}"]
TIMEOUT = 2400


def _driver(d: Path) -> list[str]:
    """``python -m scripts.rehearsal --port <the copy's port> --``."""
    return [sys.executable, "-m", "scripts.rehearsal", "--port", (d / "port").read_text(), "--"]


def _rehearse(d: Path, env: dict, *cmd: str, timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    """``python -m scripts.rehearsal -- <cmd>`` in the project copy (inputs served, hub cache offline)."""
    return subprocess.run([*_driver(d), *cmd], cwd=d, env=env, capture_output=True, text=True, timeout=timeout)


def _use_free_port(d: Path) -> None:
    """The copy's server on a free port (params.yaml's URLs name 8641: a rehearsal a user runs beside
    the tests keeps it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    params = d / "params.yaml"
    text = params.read_text()
    assert text.count("http://127.0.0.1:8641/") == 11
    params.write_text(text.replace("http://127.0.0.1:8641/", f"http://127.0.0.1:{port}/"))
    (d / "port").write_text(str(port))


def _params(d: Path) -> dict:
    from pipeline.config import load_params

    return load_params(d / "params.yaml", PROFILE)


def _runs(d: Path) -> list[str]:
    return list(_params(d)["runs"])


def _process_tree(root: int) -> list[int]:
    """``root`` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _train_launcher(d: Path, run: str) -> int | None:
    """The pid of ``python -m pipeline ... train --run <run>`` as Snakemake's rule started it in the
    project copy ``d`` (other tests may train a run of the same name elsewhere at the same time)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
            if Path(os.readlink(cmdline.parent / "cwd")) != d.resolve():
                continue
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in args]
        if "pipeline" in words and "train" in words and run in words and "torch.distributed.run" not in words:
            return int(cmdline.parent.name)
    return None


def _interrupt_after_first_checkpoint(d: Path, env: dict) -> str:
    """Start the rehearsal; once some run has its first epoch checkpoint, send SIGTERM to every process
    of that training job at once (what SLURM does at a job's time limit) and let Snakemake stop;
    return the run's name."""
    proc = subprocess.Popen([*_driver(d), *SNAKEMAKE], cwd=d, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    runs = d / "results" / PROFILE / "runs"
    deadline = time.time() + TIMEOUT
    interrupted = None
    while interrupted is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        for ckpt in sorted(runs.glob("*/seed0/checkpoints/epoch_001.pth")):
            run_dir = ckpt.parent.parent
            pid = _train_launcher(d, run_dir.parent.name)
            if pid is not None and not (run_dir / "checkpoints" / "epoch_002.pth").exists():
                for p in _process_tree(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p, signal.SIGTERM)
                interrupted = run_dir.parent.name
                break
    assert interrupted is not None, "no training run reached its first checkpoint: " + \
        (proc.communicate()[0][-3000:] if proc.poll() is not None else "")
    out, _ = proc.communicate(timeout=TIMEOUT)  # Snakemake finishes the jobs running, then stops
    assert proc.returncode != 0, out[-3000:]
    job_log = (d / "logs" / PROFILE / f"train_{interrupted}-seed0.log").read_text()
    assert "SIGTERM" in job_log.strip().splitlines()[-1], job_log[-2000:]
    assert not (runs / interrupted / "seed0" / "final.pth").exists()
    return interrupted


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """A project copy after the rehearsal: interrupted once by SIGTERM, then run to the end."""
    d = tmp_path_factory.mktemp("rehearsal")
    copy_project(d)
    for name in ("scripts", "dvc.yaml", ".dvc", ".dvcignore"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, d / name, ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache"))
        else:
            shutil.copy(src, d / name)
    _use_free_port(d)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{d / 'mlflow.db'}", "DVC_NO_ANALYTICS": "1"}
    t0 = time.time()
    interrupted = _interrupt_after_first_checkpoint(d, env)
    res = _rehearse(d, env, *SNAKEMAKE)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    yield {"dir": d, "env": env, "interrupted": interrupted, "log": res.stdout + res.stderr,
           "seconds": time.time() - t0}
    shutil.rmtree(d / "results", ignore_errors=True)  # several GB of full-size checkpoints


def test_inputs_came_through_the_real_paths(rehearsal):
    d = rehearsal["dir"]
    coco = json.loads((d / "data" / PROFILE / "coco.manifest.json").read_text())
    assert coco  # the data stage verified and installed every download
    root = d / "data" / PROFILE / "coco"
    assert (root / "annotations" / "image_info_test-dev2017.json").is_file()
    assert not (root / "annotations" / "person_keypoints_test-dev2017.json").exists()
    assert (d / "data" / PROFILE / "mpii" / "annot" / "gt_valid.mat").is_file()
    import mlflow

    mlflow.set_tracking_uri(rehearsal["env"]["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=[f"hdm-benchmark-{PROFILE}"])
    sources = dict(zip(runs["tags.mlflow.runName"], runs["tags.pretrained_weights"]))
    assert sources["coco_simplebaseline_mse-seed0"] == "timm:resnet152.tv_in1k"
    assert sources["mpii_hrnet_w48_hdm-seed0"] == "timm:hrnet_w48.ms_in1k"
    assert sources["coco_hrformer_base_hdm-seed0"].startswith("file:hrformer_base-32815020_20220226.pth sha256:")


def test_every_paper_run_trained_on_two_processes_and_evaluated(rehearsal):
    d = rehearsal["dir"]
    runs = _runs(d)
    assert len(runs) == 19
    for run in runs:
        out = d / "results" / PROFILE / "runs" / run / "seed0"
        assert (out / "final.pth").is_file(), run
        assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["epoch_002.pth", "epoch_003.pth"], run
        log = (out / "train.log").read_text()
        assert "× 2 processes" in log, run
        metrics = json.loads((d / "results" / PROFILE / "eval" / run / "seed0" / "metrics.json").read_text())
        key = "coco_val/AP" if run.startswith("coco") else "mpii_val/Mean"
        assert key in metrics["metrics"], run
        assert not any(k.startswith("coco_testdev") for k in metrics["metrics"]), run  # no ground truth
        eval_log = (d / "results" / PROFILE / "eval" / run / "seed0" / "evaluate.log").read_text()
        assert "Loading pretrained weights" not in eval_log, run  # the checkpoint holds every tensor
    hrformer = (d / "results" / PROFILE / "runs" / "coco_hrformer_base_hdm" / "seed0" / "train.log").read_text()
    assert "sync_bn" in hrformer and "float16" in hrformer


def test_table2_says_submitted_until_the_server_scores_are_loaded(rehearsal):
    d = rehearsal["dir"]
    t2 = pd.read_csv(d / "reports" / PROFILE / "table2.csv").query("source == 'measured'").set_index("run")
    for run in [r for r in _runs(d) if r.startswith("coco")]:
        zip_ = d / "results" / PROFILE / "eval" / run / "seed0" / "submission" / \
            f"person_keypoints_test-dev2017_{run}_results.zip"
        assert zip_.is_file(), run
        if run in t2.index:
            assert t2.loc[run, "status"] == "submitted, no scores yet", run


SCORES = {"AP": 0.761, "AP50": 0.925, "AP75": 0.833, "APM": 0.722, "APL": 0.821,
          "AR": 0.810, "AR50": 0.950, "AR75": 0.870, "ARM": 0.770, "ARL": 0.870}
SUMMARY_LINES = [
    ("Average Precision", "0.50:0.95", "all", "AP"), ("Average Precision", "0.50", "all", "AP50"),
    ("Average Precision", "0.75", "all", "AP75"), ("Average Precision", "0.50:0.95", "medium", "APM"),
    ("Average Precision", "0.50:0.95", "large", "APL"), ("Average Recall", "0.50:0.95", "all", "AR"),
    ("Average Recall", "0.50", "all", "AR50"), ("Average Recall", "0.75", "all", "AR75"),
    ("Average Recall", "0.50:0.95", "medium", "ARM"), ("Average Recall", "0.50:0.95", "large", "ARL")]


def _score_files(tmp: Path) -> dict[str, Path]:
    """The server's scores in each format the loader accepts (values as fractions or percent)."""
    stats = list(SCORES.values())
    summary = "\n".join(f" {kind:<18} ({'AP' if 'Precision' in kind else 'AR'}) @[ IoU={iou:<9} | area={area:>6} | "
                        f"maxDets= 20 ] = {SCORES[key]:.3f}" for kind, iou, area, key in SUMMARY_LINES)
    files = {"named.json": json.dumps(SCORES), "evalai.json": json.dumps([{"test-dev": SCORES}]),
             "stats.json": json.dumps(stats), "percent.json": json.dumps({k: 100 * v for k, v in SCORES.items()}),
             "summary.txt": summary + "\n"}
    out = {}
    for name, text in files.items():
        (tmp / name).write_text(text)
        out[name] = tmp / name
    return out


def test_server_scores_in_every_format_fill_table2(rehearsal, tmp_path):
    d, env = rehearsal["dir"], rehearsal["env"]
    coco = [r for r in _runs(d) if r.startswith("coco") and not r.endswith("_udp")]
    loads = list(zip(coco, _score_files(tmp_path).items()))
    for run, (_, path) in loads:
        res = subprocess.run([sys.executable, "-m", "pipeline", "--profile", PROFILE, "testdev-scores", "--run", run,
                              "--scores", str(path)], cwd=d, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
    mse = next(r for r in coco if r.endswith("_mse"))
    res = subprocess.run([sys.executable, "-m", "pipeline", "--profile", PROFILE, "testdev-scores", "--run", mse,
                          "--variant", "dark", "--scores", str(tmp_path / "summary.txt")], cwd=d, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    res = _rehearse(d, env, *SNAKEMAKE, "--forcerun", "report", timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "train" not in [line.split()[-1] for line in res.stdout.splitlines() if line.startswith("localrule")]
    t2 = pd.read_csv(d / "reports" / PROFILE / "table2.csv").query("source == 'measured'").set_index("run")
    for run, (name, _) in loads:
        if run in t2.index:
            assert t2.loc[run, "status"] == "ok", (run, name)
            assert t2.loc[run, "AP"] == pytest.approx(76.1), (run, name)
            assert t2.loc[run, "AR"] == pytest.approx(81.0), (run, name)
    assert t2.loc[f"{mse}+dark", "AP"] == pytest.approx(76.1)
    assert "submitted, no scores yet" in set(t2["status"])  # the runs without scores still say so


def test_dvc_front_end_runs_the_stages(rehearsal):
    """DVC runs the same stages (`dvc repro --single-item` of each kind, on the Snakemake run's inputs:
    a full second rehearsal through DVC would double the CI time)."""
    d, env = rehearsal["dir"], {**rehearsal["env"], "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                                "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    params = yaml.safe_load((d / "params.yaml").read_text())
    params["profile"] = PROFILE  # what `dvc exp run -S profile=rehearsal` writes
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (d / ".gitignore").write_text("/data/\n/results/\n/logs/\n/mlflow.db\n/mlruns/\n__pycache__/\n/reports/\n")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=d, env=env, check=True, capture_output=True)
    run = "mpii_hrnet_w32_hdm"  # the cheapest paper run on CPU (HRFormer's float16 autocast takes minutes)
    shutil.rmtree(d / "results" / PROFILE / "runs" / run)
    shutil.rmtree(d / "results" / PROFILE / "eval" / run)
    stages = ["mlflow_init", "pretrain@hrnet_w32", "data@coco", "data@mpii", f"train@{run}-0",
              f"evaluate@{run}-0", "report"]
    res = _rehearse(d, env, str(BIN / "dvc"), "repro", "--single-item", *stages, timeout=1200)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (d / "results" / PROFILE / "runs" / run / "seed0" / "final.pth").is_file()
    assert (d / "results" / PROFILE / "eval" / run / "seed0" / "metrics.json").is_file()
    lock = yaml.safe_load((d / "dvc.lock").read_text())["stages"]
    assert {f"train@{run}-0", f"evaluate@{run}-0", "report"} <= set(lock)
