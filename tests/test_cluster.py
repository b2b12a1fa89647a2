"""The workflow on a real SLURM cluster, logging to a real MLflow tracking server.

``scripts/local-cluster.sh up`` starts a one-node SLURM cluster on 127.0.0.1 (munge, MariaDB + slurmdbd
for accounting, slurmctld, slurmd) and ``mlflow server`` on PostgreSQL. Snakemake then runs the smoke
profile with the users' SLURM profile (``workflow/profiles/slurm``): every job goes through ``sbatch``
of ``snakemake-executor-plugin-slurm`` and is polled with ``sacct``; every stage logs to the server.

What a user of a cluster meets, for real rather than faked:
- each job asks SLURM for the resources Snakemake resolved for it (read back from ``sacct``), a GPU
  training job's ``--gpus`` / ``--cpus-per-gpu`` included (the node counts a stand-in GPU);
- a training job that outlives its time limit ends TIMEOUT, is resubmitted (the profile's retries),
  resumes from its last epoch checkpoint; cancelled next with ``scancel``, it is resubmitted again and
  resumes again; it ends with the weights (sha256 of the tensors) and metrics of an identical run trained
  without interruption beside it;
- both trainings log at once while the tracking server is stopped and started under them: every
  epoch's metrics are in the server exactly once, and the report is built from the server's records;
- a stage that cannot reach the server stops with one line naming it; once the server is back, the
  rerun completes.

Skipped, with the script's one-line reason, where the cluster cannot be started (not root and its Debian
packages missing); as root (CI) the script installs them. A cluster already up (``status`` 0) is used
and left up; otherwise this module starts it and stops it at the end.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from pipeline.tracking.metric_names import canonical_key
from project_copy import copy_project

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SCRIPT = ROOT / "scripts" / "local-cluster.sh"
PROFILE_DIR = "workflow/profiles/slurm"
STEP_TIMEOUT = 600  # s: the bound of every wait in this module

# The run the scheduler interrupts, and its twin: the same spec under another name, trained without
# interruption in the same workflow (every random stream is seeded from the seed, never the name).
RUN = "coco_hrnet_w32_mse"
TWIN = "coco_hrnet_w32_mse_twin"
# SLURM enforces time limits in whole minutes, checked every 30 s: a 1-minute limit ends a job 60 to 90 s
# after it started. The run trains for about TRAIN_S on this machine (epochs from a calibration), so that
# its first job, started 10 to 40 s before its first epoch, is still training when the limit ends it.
TRAIN_S = 120.0
TIMING_METRICS = {"epoch_time_s", "images_per_s"}  # per-epoch values that measure time, not training
# The jobs' MLflow client while the server restarts under them. The project's defaults (5 s, 2 retries,
# factor 1) give up on a refused connection after about 3 s: a job would stop with one line (and its
# retries too) rather than wait. These wait out a refused connection for about 6 minutes (pauses 0, 4,
# 8, ... s, at most 120 s each: urllib3's cap), longer than the server's restart on a loaded machine.
MLFLOW_PATIENT_CLIENT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "8", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
                         "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


# ----------------------------------------------------------------------------- the cluster
def cluster_script(command: str, env: dict[str, str], *args: str, timeout: float = 900
                   ) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), command, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def sourced_env(base: dict[str, str]) -> dict[str, str]:
    """``base`` after sourcing ``$LOCAL_CLUSTER_DIR/env.sh`` (SLURM_CONF, PATH, MLFLOW_TRACKING_URI)."""
    env_sh = Path(base.get("LOCAL_CLUSTER_DIR", "/tmp/hdm-local-cluster")) / "env.sh"
    out = subprocess.run(["bash", "-c", f'source "{env_sh}" && env -0'], env=base, capture_output=True,
                         check=True, timeout=30).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


@pytest.fixture(scope="module")
def cluster():
    """The running local cluster's environment (started here unless it already runs)."""
    # another cluster's or store's settings must not leak in (the MLflow client's retry settings may)
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k != "MLFLOW_TRACKING_URI"}
    was_up = cluster_script("status", base, timeout=120).returncode == 0
    if not was_up:
        up = cluster_script("up", base)
        if up.returncode == 2:
            pytest.skip(up.stderr.strip().splitlines()[-1])
        assert up.returncode == 0, up.stdout + up.stderr
    yield sourced_env(base)
    if not was_up:
        down = cluster_script("down", base, timeout=300)
        assert down.returncode == 0, down.stdout + down.stderr


# ----------------------------------------------------------------------------- SLURM records
SACCT_FIELDS = ("JobIDRaw", "Comment", "State", "Timelimit", "ReqCPUS", "ReqMem", "AllocTRES", "WorkDir")


def sacct_jobs(env: dict[str, str], workdir: Path) -> list[dict[str, str]]:
    """Every job of the local cluster that ran in ``workdir`` (allocations, not steps), oldest first."""
    out = subprocess.run(["sacct", "-X", "-P", "--noheader", "-S", "now-1days", "-E", "now",
                          f"--format={','.join(SACCT_FIELDS)}"], env=env, capture_output=True, text=True,
                         check=True, timeout=60).stdout
    rows = [dict(zip(SACCT_FIELDS, line.split("|"))) for line in out.splitlines() if line.strip()]
    return sorted((r for r in rows if Path(r["WorkDir"]) == workdir), key=lambda r: int(r["JobIDRaw"]))


def minutes(timelimit: str) -> int:
    """sacct's ``[days-]hh:mm:ss`` in minutes."""
    days, _, hms = timelimit.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return (int(days or 0) * 24 + h) * 60 + m + (s > 0)


def tres(text: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in text.split(",") if "=" in kv)


def job_comment(rule: str, wildcards: dict[str, str]) -> str:
    """The ``--comment`` the executor gives a job: its rule and wildcard values."""
    return f"rule_{rule}_wildcards_{'_'.join(wildcards.values())}"


def _value(v: str):
    return int(v) if re.fullmatch(r"-?\d+", v) else v


def dry_run_jobs(project: Path, env: dict[str, str], *targets: str) -> dict[str, dict]:
    """comment -> {"rule", "threads", "resources"} of every job Snakemake would submit with the SLURM
    profile (in a fresh project: every job of the targets but the committed pretraining), with the
    resources after the profile's default- and set-resources are applied."""
    out = subprocess.run([str(BIN / "snakemake"), "-n", *targets, "--workflow-profile", PROFILE_DIR,
                          "--config", "profile=smoke"], cwd=project, env=env, capture_output=True, text=True,
                         check=True, timeout=STEP_TIMEOUT).stdout
    jobs = {}
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", out):
        rule = re.search(r"^rule (\w+):", block, re.M)
        wildcards = re.search(r"^    wildcards: (.*)$", block, re.M)
        if not rule or not wildcards:  # target rules (all) have neither wildcards nor a job to submit
            continue
        res = re.search(r"^    resources: (.*)$", block, re.M).group(1)
        threads = re.search(r"^    threads: (\d+)", block, re.M)  # printed only when > 1
        wc = dict(kv.split("=", 1) for kv in wildcards.group(1).split(", "))
        jobs[job_comment(rule.group(1), wc)] = {
            "rule": rule.group(1), "threads": int(threads.group(1)) if threads else 1,
            "resources": {k: _value(v) for k, v in (kv.split("=", 1) for kv in res.split(", "))}}
    return jobs


def wait_for(what: str, predicate, timeout: float = STEP_TIMEOUT, every: float = 1.0, proc=None):
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout`` s, or as
    soon as ``proc`` (the Snakemake run) has ended."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"Snakemake ended (status {proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def running_job(env: dict[str, str], comment: str, other_than: set[str] = frozenset()) -> str | None:
    """The id of a running SLURM job with ``comment`` (and an id not in ``other_than``), if one runs."""
    out = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k"], env=env, capture_output=True,
                         text=True, timeout=60).stdout
    ids = [i for i, c in (line.split("|", 1) for line in out.splitlines() if "|" in line)
           if c == comment and i not in other_than]
    return ids[0] if ids else None


def slurm(env: dict[str, str], *cmd: str) -> None:
    subprocess.run(list(cmd), env=env, check=True, capture_output=True, text=True, timeout=60)


# ----------------------------------------------------------------------------- the project
def smoke_project(d: Path, experiment: str, epochs: int, **profile_changes) -> Path:
    """A smoke project copy whose main target trains RUN for ``epochs``, with TWIN (the same spec) as a
    study-only run, logging to an experiment of its own."""
    d.mkdir(parents=True, exist_ok=True)
    copy_project(d)
    params = yaml.safe_load((d / "params.yaml").read_text())
    def spec() -> dict:
        return {"dataset": "coco", "arch": "hrnet_w32", "loss": "mse", "train": {"epochs": epochs}}

    params.update(profile="smoke", seeds=[0], runs={RUN: spec()})
    params["mlflow"]["experiment"] = experiment
    params["study"]["runs"] = {TWIN: spec()}
    params["verdict"]["runs"] = {}
    params["profiles"]["smoke"].update(profile_changes)
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return d


def seconds_per_epoch(scratch: Path, env: dict[str, str]) -> float:
    """This machine's time for one smoke epoch as the workflow's jobs train it: RUN and TWIN side by side
    (two jobs share the node's CPUs), logging to the tracking server (each epoch's metrics are requests to
    it), each timed from its second epoch's log line to its fourth; the slower of the two. One training
    timed alone with a local SQLite store measured a fraction of the workflow's epoch (0.33 s against
    1.2 s on a loaded machine), and the trainings ran for many minutes instead of TRAIN_S."""
    d = smoke_project(scratch, f"calibration-{uuid.uuid4().hex[:8]}", 4)

    def stage(*args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "pipeline", "--profile", "smoke", "--quiet", *args], cwd=d,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    for group in ([["data", "--dataset", "coco"]], [["mlflow-init"]], [["train", "--run", r] for r in (RUN, TWIN)]):
        procs = [stage(*args) for args in group]
        for args, proc in zip(group, procs):
            _, err = proc.communicate(timeout=STEP_TIMEOUT)
            assert proc.returncode == 0, (args, err[-3000:])
    per_epoch = []
    for run in (RUN, TWIN):
        log = (d / "results/smoke/runs" / run / "seed0/train.log").read_text()
        stamps = [datetime.strptime(m, "%Y-%m-%d %H:%M:%S,%f")
                  for m in re.findall(r"^(\S+ \S+) INFO \S+: \S+ epoch [24]/4 ", log, re.M)]
        per_epoch.append((stamps[1] - stamps[0]).total_seconds() / 2)
    return max(*per_epoch, 0.05)


def checkpoint_epochs(project: Path, run: str) -> list[int]:
    ckpts = project / "results/smoke/runs" / run / "seed0/checkpoints"
    return sorted(int(p.stem.split("_")[1]) for p in ckpts.glob("epoch_*.pth"))


def last_epoch(project: Path, run: str) -> int:
    epochs = checkpoint_epochs(project, run)
    return epochs[-1] if epochs else 0


def weights_sha256(path: Path) -> str:
    """sha256 of a checkpoint's tensors (names and bytes, in order): the weights, not the file (which also
    holds the run's name, its MLflow run id and timings)."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    h = hashlib.sha256()
    for name, tensor in state.items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def training_history(project: Path, run: str) -> list[dict]:
    """The final checkpoint's per-epoch rows without the timing values."""
    import torch

    rows = torch.load(project / "results/smoke/runs" / run / "seed0/final.pth", map_location="cpu",
                      weights_only=True)["history"]
    return [{k: v for k, v in row.items() if k not in TIMING_METRICS} for row in rows]


def eval_metrics(project: Path, run: str) -> dict:
    return json.loads((project / "results/smoke/eval" / run / "seed0/metrics.json").read_text())


# ----------------------------------------------------------------------------- the workflow run
@pytest.fixture(scope="module")
def workflow(cluster, tmp_path_factory):
    """The smoke workflow run through SLURM, with RUN's training stopped by a time limit and the
    tracking server stopped and started while RUN and TWIN train.
    What happened on the way is recorded for the tests."""
    # the jobs wait out the server's restart (MLFLOW_PATIENT_CLIENT) unless the caller sets the client
    env = {**MLFLOW_PATIENT_CLIENT, **cluster}
    per_epoch = seconds_per_epoch(tmp_path_factory.mktemp("calibration"), env)
    epochs = max(20, math.ceil(TRAIN_S / per_epoch))
    experiment = f"hdm-cluster-test-{uuid.uuid4().hex[:8]}"
    d = smoke_project(tmp_path_factory.mktemp("cluster_project"), experiment, epochs)
    targets = ["all", f"results/smoke/eval/{TWIN}/seed0/metrics.json"]
    expected = dry_run_jobs(d, env, *targets)
    rec = SimpleNamespace(project=d, env=env, epochs=epochs, experiment=experiment, expected=expected)
    # a copy for running a stage by hand while the workflow runs (the workflow's own store file, an input
    # of its trainings, must keep its date)
    by_hand = smoke_project(tmp_path_factory.mktemp("by_hand"), experiment, epochs)
    train_comment = job_comment("train", {"profile": "smoke", "run": RUN, "seed": "0"})

    log = d / "snakemake.log"
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen([str(BIN / "snakemake"), *targets, "--workflow-profile", PROFILE_DIR,
                                 # short jobs: the first status check after 2 s instead of 40
                                 "--slurm-init-seconds-before-status-checks", "2", "--slurm-keep-successful-logs",
                                 "--config", "profile=smoke"], cwd=d, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        # a time limit shorter than the training: 1 minute for RUN's first job, given once it has a
        # checkpoint to resume from (a job already past the minute ends at SLURM's next check, <= 30 s)
        rec.limited = wait_for("RUN's training job", lambda: running_job(env, train_comment), proc=proc)
        wait_for("RUN's first checkpoint", lambda: last_epoch(d, RUN) >= 1, proc=proc, every=0.5)
        slurm(env, "scontrol", "update", f"JobId={rec.limited}", "TimeLimit=1")
        # the tracking server goes away while both trainings log, and comes back
        wait_for("three epochs of both trainings",
                 lambda: min(last_epoch(d, RUN), last_epoch(d, TWIN)) >= 3, proc=proc, every=0.5)
        rec.server_stopped_at_epoch = {r: last_epoch(d, r) for r in (RUN, TWIN)}
        stop = cluster_script("stop", env, "mlflow", timeout=120)
        assert stop.returncode == 0, stop.stderr
        t0 = time.monotonic()
        rec.init_without_server = subprocess.run(
            [sys.executable, "-m", "pipeline", "--profile", "smoke", "mlflow-init"], cwd=by_hand, capture_output=True,
            text=True, timeout=STEP_TIMEOUT, env={**env, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
        rec.init_without_server_s = time.monotonic() - t0
        start = cluster_script("start", env, "mlflow", timeout=STEP_TIMEOUT)
        assert start.returncode == 0, start.stderr
        rec.server_down_s = time.monotonic() - t0
        rec.init_with_server = subprocess.run([sys.executable, "-m", "pipeline", "--profile", "smoke", "mlflow-init"],
                                              cwd=by_hand, capture_output=True, text=True, timeout=STEP_TIMEOUT,
                                              env=env)
        rec.server_back_at_epoch = {r: last_epoch(d, r) for r in (RUN, TWIN)}
        # the resubmitted job resumes from the checkpoint the limited one left; cancelled with scancel once
        # it has saved an epoch of its own, it is submitted again (the profile's last retry) and completes
        rec.cancelled = wait_for("RUN's resubmitted training job",
                                 lambda: running_job(env, train_comment, {rec.limited}), proc=proc)
        resumed_at = last_epoch(d, RUN)
        wait_for("an epoch of the resubmitted job", lambda: last_epoch(d, RUN) > resumed_at, proc=proc, every=0.5)
        slurm(env, "scancel", rec.cancelled)
        rec.completed = wait_for("RUN's training job after scancel",
                                 lambda: running_job(env, train_comment, {rec.limited, rec.cancelled}), proc=proc)
        rec.returncode = proc.wait(timeout=STEP_TIMEOUT)
    finally:
        stop_workflow(proc, env, d)
    rec.seconds = time.monotonic() - started
    rec.log = log.read_text()
    rec.jobs = sacct_jobs(env, d)
    rec.rerun = subprocess.run([str(BIN / "snakemake"), "-n", *targets, "--workflow-profile", PROFILE_DIR,
                                "--config", "profile=smoke"], cwd=d, env=env, capture_output=True, text=True,
                               timeout=STEP_TIMEOUT)
    return rec


def stop_workflow(proc: subprocess.Popen, env: dict[str, str], project: Path) -> None:
    """After a failed wait: stop Snakemake (SIGTERM, then SIGKILL after 60 s) and cancel the project's
    SLURM jobs that are left, so that nothing of this test runs on."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=60)
    out = subprocess.run(["squeue", "-h", "-o", "%i|%Z"], env=env, capture_output=True, text=True, timeout=60).stdout
    left = [i for i, workdir in (line.split("|", 1) for line in out.splitlines() if "|" in line)
            if Path(workdir) == project]
    if left:
        subprocess.run(["scancel", *left], env=env, capture_output=True, timeout=60)


def test_the_workflow_completes_through_slurm(workflow):
    assert workflow.returncode == 0, workflow.log[-5000:]
    assert "Nothing to be done" in workflow.rerun.stdout + workflow.rerun.stderr, workflow.rerun.stdout[-3000:]
    for f in ("table1.md", "table1.csv", "findings.md"):
        assert (workflow.project / "reports/smoke" / f).is_file(), f


def test_every_job_asked_slurm_for_its_resources(workflow):
    """Every job Snakemake planned was an sbatch job, and sacct shows the CPUs, memory and time limit
    that the SLURM profile resolved for it (RUN's first job: the 1-minute limit the test gave it)."""
    jobs, expected = workflow.jobs, workflow.expected
    assert {j["Comment"] for j in jobs} == set(expected), (sorted(j["Comment"] for j in jobs), sorted(expected))
    for job in jobs:
        want = expected[job["Comment"]]
        res = want["resources"]
        assert int(job["ReqCPUS"]) == want["threads"], job
        assert job["ReqMem"] == f"{res['mem_mb']}M", job
        limit = 1 if job["JobIDRaw"] == workflow.limited else res["runtime"]
        assert minutes(job["Timelimit"]) == limit, job
        assert tres(job["AllocTRES"])["cpu"] == str(want["threads"]), job
        assert "gres/gpu" not in tres(job["AllocTRES"]), job  # smoke runs on CPUs
        # a log per job, where the executor says
        rule = want["rule"]
        wildcards = job["Comment"].split("_wildcards_", 1)[1]
        assert (workflow.project / ".snakemake/slurm_logs" / f"rule_{rule}" / wildcards
                / f"{job['JobIDRaw']}.log").is_file(), job


def test_a_time_limit_and_scancel_end_in_the_uninterrupted_weights(workflow):
    """RUN's first job ended TIMEOUT, its second was cancelled with scancel (sacct: ``CANCELLED by <uid>``);
    Snakemake submitted each again, each new job resumed from the last checkpoint, and the third
    completed with the weights, curves and evaluation of the twin trained without interruption."""
    d = workflow.project
    train = [j for j in workflow.jobs if j["Comment"].startswith(f"rule_train_wildcards_smoke_{RUN}_0")]
    assert [(j["JobIDRaw"], j["State"].split()[0]) for j in train] == [
        (workflow.limited, "TIMEOUT"), (workflow.cancelled, "CANCELLED"), (workflow.completed, "COMPLETED")]
    # each resubmitted job resumed from the checkpoint the one before it left
    train_log = (d / "results/smoke/runs" / RUN / "seed0/train.log").read_text()
    resumed = re.findall(rf"resuming {RUN} from \S+epoch_(\d+)\.pth: epoch (\d+) of {workflow.epochs}", train_log)
    assert len(resumed) == 2, train_log[-3000:]
    assert all(int(ckpt) >= 1 and int(ckpt) + 1 == int(epoch) for ckpt, epoch in resumed), resumed
    assert int(resumed[0][0]) < int(resumed[1][0]), resumed
    # the same weights, curves and evaluation as the twin trained without interruption
    assert weights_sha256(d / f"results/smoke/runs/{RUN}/seed0/final.pth") == \
        weights_sha256(d / f"results/smoke/runs/{TWIN}/seed0/final.pth")
    assert training_history(d, RUN) == training_history(d, TWIN)
    assert len(training_history(d, RUN)) == workflow.epochs
    assert eval_metrics(d, RUN)["metrics"] == eval_metrics(d, TWIN)["metrics"]


def test_every_epoch_reaches_the_server_once_through_its_restart(workflow):
    """RUN and TWIN logged at the same time, through the server's stop and start and RUN's two
    interruptions: each has one MLflow run on the server, finished and evaluated, with every epoch of
    every metric exactly once, equal to the checkpoint's record."""
    import mlflow

    d = workflow.project
    assert workflow.server_down_s > 1
    # the server went away during the trainings, not before or after them
    assert all(0 < e < workflow.epochs for e in workflow.server_stopped_at_epoch.values())
    client = mlflow.tracking.MlflowClient(workflow.env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(f"{workflow.experiment}-smoke")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(f"{r}-seed0" for r in (RUN, TWIN))
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags["evaluated"] == "true", run.info
        name = run.info.run_name.rsplit("-seed", 1)[0]
        history = json.loads((d / "results/smoke/runs" / name / "seed0/train_summary.json").read_text())["history"]
        assert [row["epoch"] for row in history] == list(range(1, workflow.epochs + 1))
        for key in history[0]:
            if key == "epoch":
                continue
            logged = client.get_metric_history(run.info.run_id, canonical_key(key))  # the log line's name
            assert sorted(m.step for m in logged) == list(range(1, workflow.epochs + 1)), (name, key)
            by_step = {m.step: m.value for m in logged}
            assert all(math.isclose(by_step[row["epoch"]], row[key], rel_tol=1e-6, abs_tol=1e-9)
                       for row in history if not math.isnan(row[key])), (name, key)
        assert eval_metrics(d, name)["mlflow_run_id"] == run.info.run_id


def test_the_report_reads_the_server(workflow):
    """The report job built its tables from the runs on the server: RUN's row in Table 1 is measured and
    names RUN's MLflow run id as the server knows it."""
    import pandas as pd
    import mlflow

    d = workflow.project
    t1 = pd.read_csv(d / "reports/smoke/table1.csv")
    row = t1[(t1["source"] == "measured") & (t1["run"] == RUN)].iloc[0]
    assert row["status"] in ("ok", "partial")
    client = mlflow.tracking.MlflowClient(workflow.env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(f"{workflow.experiment}-smoke")
    (run,) = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.runName = '{RUN}-seed0'")
    assert row["mlflow_run_id"] == run.info.run_id, row


def test_without_the_server_a_stage_stops_with_one_line_and_the_rerun_completes(workflow):
    """With the server stopped (and the client's retries off), mlflow-init stopped at once with one line
    naming the server; rerun with the server back, it completed."""
    res = workflow.init_without_server
    uri = workflow.env["MLFLOW_TRACKING_URI"]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 1, res.stderr
    assert [ln for ln in lines if ln.startswith("error:")] == lines[-1:], res.stderr
    assert lines[-1].startswith("error: ") and uri in lines[-1], lines[-1]  # names the server
    assert "Traceback" not in res.stderr and len(lines[-1]) < 400, res.stderr
    assert workflow.init_without_server_s < 60
    rerun = workflow.init_with_server
    assert rerun.returncode == 0 and "MLflow store ready" in rerun.stdout, rerun.stderr


# ----------------------------------------------------------------------------- the cluster itself
def test_status_names_every_service_and_the_node_is_this_machine(cluster):
    """``status`` reports the seven services running; the node has this machine's CPUs and memory, the
    partition the SLURM profile asks for and one (stand-in) GPU; sacctmgr reaches slurmdbd."""
    status = cluster_script("status", cluster, timeout=120)
    assert status.returncode == 0, status.stdout + status.stderr
    services = [line.split()[:2] for line in status.stdout.splitlines()]
    assert services == [[s, "running"] for s in
                        ("munge", "mariadb", "slurmdbd", "slurmctld", "slurmd", "postgres", "mlflow")], status.stdout
    node = subprocess.run(["sinfo", "-h", "-N", "-o", "%P|%c|%m|%G|%T"], env=cluster, capture_output=True,
                          text=True, check=True, timeout=60).stdout.split()[0].split("|")
    profile = yaml.safe_load((ROOT / PROFILE_DIR / "config.yaml").read_text())
    mem_mb = int(subprocess.run(["free", "-m"], capture_output=True, text=True).stdout.split("\n")[1].split()[1])
    assert node[0].rstrip("*") == profile["default-resources"]["slurm_partition"], node
    assert int(node[1]) == os.cpu_count() and int(node[2]) == mem_mb, node
    assert node[3] == "gpu:1" and node[4] in ("idle", "mixed", "allocated"), node
    clusters = subprocess.run(["sacctmgr", "-n", "-P", "show", "cluster", "format=cluster"], env=cluster,
                              capture_output=True, text=True, timeout=60)
    assert clusters.returncode == 0 and clusters.stdout.split() == ["hdmlocal"], clusters.stderr


def test_a_job_step_reaches_the_cluster_without_slurm_conf(cluster, tmp_path):
    """The executor's job step starts ``srun`` with SLURM_CONF removed from its environment, as here: the
    step still finds the local cluster's configuration (env.sh's srun)."""
    out = subprocess.run(["sbatch", "--parsable", "-t", "2", "--mem", "100", "-D", str(tmp_path), "-o", str(tmp_path / "%j.log"),
                          "--wrap", "env -u SLURM_CONF srun -n1 echo step-ran"], env=cluster, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip().split(";")[0]
    row = wait_for(f"job {job_id}", lambda: finished_job(cluster, tmp_path, job_id), timeout=120)
    assert row["State"] == "COMPLETED", (row, (tmp_path / f"{job_id}.log").read_text())
    assert (tmp_path / f"{job_id}.log").read_text().split() == ["step-ran"]


def finished_job(env: dict[str, str], workdir: Path, job_id: str) -> dict[str, str] | None:
    """sacct's row of job ``job_id`` once it has ended."""
    rows = [r for r in sacct_jobs(env, workdir) if r["JobIDRaw"] == job_id]
    return rows[0] if rows and rows[0]["State"] not in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED") else None


def executor_status_command(env: dict[str, str], run_uuid: str) -> str:
    """The status query snakemake-executor-plugin-slurm runs for the SLURM profile's jobs of one workflow
    run: the profile's ``slurm-status-command`` (the plugin's default where sacct exists: sacct), which the
    plugin replaces by sacct where the cluster's MinJobAge is under three first status-check intervals."""
    from snakemake_executor_plugin_slurm.job_status_query import (get_min_job_age, query_job_status_sacct,
                                                                  query_job_status_squeue)

    profile = yaml.safe_load((ROOT / PROFILE_DIR / "config.yaml").read_text())
    command = profile.get("slurm-status-command", "sacct")
    first_check_s = int(profile.get("slurm-init-seconds-before-status-checks", 40))
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        min_job_age = get_min_job_age()
    if command == "squeue" and (min_job_age is None or min_job_age < 3 * first_check_s):
        command = "sacct"
    return query_job_status_squeue(run_uuid) if command == "squeue" else query_job_status_sacct(run_uuid)


def test_the_executor_sees_a_cancelled_job_as_failed(cluster, tmp_path):
    """A job cancelled with scancel, as the executor's status query with the SLURM profile's settings
    reports it: a state the executor counts as a failure (so that Snakemake submits it again), not one it
    waits on. sacct reports ``CANCELLED by <uid>``, which snakemake-executor-plugin-slurm 2.8.0 does not
    match; the profile's squeue reports ``CANCELLED``."""
    import asyncio
    import logging

    from snakemake_executor_plugin_slurm.job_status_query import query_job_status

    run_uuid = str(uuid.uuid4())  # the executor names every job of a workflow run by the run's uuid
    out = subprocess.run(["sbatch", "--parsable", "-t", "2", "--mem", "100", "-D", str(tmp_path), "-J", run_uuid,
                          "-o", str(tmp_path / "%j.log"), "--wrap", "sleep 60"], env=cluster, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip().split(";")[0]
    wait_for(f"job {job_id} running", lambda: subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"], env=cluster, capture_output=True, text=True,
        timeout=60).stdout.strip() == "RUNNING", timeout=120)
    slurm(cluster, "scancel", job_id)
    row = wait_for(f"job {job_id} cancelled", lambda: finished_job(cluster, tmp_path, job_id), timeout=120)
    assert row["State"].startswith("CANCELLED"), row
    command = executor_status_command(cluster, run_uuid)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in cluster.items():
            mp.setenv(k, v)
        status, _ = asyncio.run(query_job_status(command, logging.getLogger("test")))
    fail_states = ("BOOT_FAIL", "CANCELLED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "TIMEOUT", "ERROR")
    assert status.get(job_id) in fail_states, (command, status)


# ----------------------------------------------------------------------------- a GPU job
def test_a_gpu_training_job_gets_its_gpu_cpus_memory_and_time(cluster, tmp_path):
    """A GPU training job as the SLURM profile and the executor submit it (its sbatch line built by the
    plugin's own code from Snakemake's resolved resources), run on the node's stand-in GPU: sacct shows
    the GPU, CPUs per GPU, memory and time limit that params.yaml's cluster section asks for."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    cluster_cfg = {"gpu_model": "", "cpus_per_gpu": 2, "mem_mb_per_gpu": 1500, "runtime_min": 7}
    d = smoke_project(tmp_path / "gpu", "gpu-job", 2, device="cuda", cluster=cluster_cfg)
    params = yaml.safe_load((d / "params.yaml").read_text())
    params["profiles"]["smoke"]["train"]["gpus"] = 1
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    jobs = dry_run_jobs(d, cluster, f"results/smoke/runs/{RUN}/seed0/final.pth")
    comment = job_comment("train", {"profile": "smoke", "run": RUN, "seed": "0"})
    job = jobs[comment]
    assert job["resources"]["gpu"] == 1 and job["resources"]["cpus_per_gpu"] == 2

    class Resources(dict):
        __getattr__ = dict.__getitem__

    fake = SimpleNamespace(resources=Resources(job["resources"]), threads=job["threads"], name="train",
                           is_group=lambda: False)
    call = get_submit_command(fake, {"run_uuid": "gpu-job", "slurm_logfile": str(d / "gpu-%j.log"),
                                     "comment_str": comment, "account": "",
                                     "partition": f" -p {job['resources']['slurm_partition']}", "workdir": str(d)})
    call += set_gres_string(fake)
    assert "--gpus=1" in call.split() and "--cpus-per-gpu=2" in call.split(), call
    probe = 'echo gpus=$SLURM_GPUS_ON_NODE cuda=$CUDA_VISIBLE_DEVICES'
    out = subprocess.run(f"{call} --wrap '{probe}'", shell=True, env=cluster, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip().split(";")[0]

    row = wait_for(f"GPU job {job_id}", lambda: finished_job(cluster, d, job_id), timeout=120)
    assert row["State"] == "COMPLETED" and row["Comment"] == comment, row
    alloc = tres(row["AllocTRES"])
    assert alloc["gres/gpu"] == "1" and alloc["cpu"] == "2" and alloc["mem"] == "1500M", row
    assert minutes(row["Timelimit"]) == 7, row
    assert (d / f"gpu-{job_id}.log").read_text().split() == ["gpus=1", "cuda=0"]
