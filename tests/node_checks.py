"""Checks of a training job run as on a GPU node, reusable on any project directory (a scratch copy, or
a real rehearsal project after its own training ran).

A job is launched exactly as the Snakemake rule launches it (``python -m pipeline --profile <p> train
--run <run> --seed <k>`` from the project root), so with ``train.gpus: 2`` it relaunches itself under
torchrun as two Gloo processes. The functions take the project directory, the run and the environment
the job runs in (``MLFLOW_TRACKING_URI`` pointing at the project's store, plus whatever the project
needs, e.g. a pre-filled Hugging Face cache):

- :func:`train`: run the job to its end;
- :func:`assert_node_job`: the finished job trained as on a node (two processes, synchronised
  BatchNorm, float16 autocast with a GradScaler, AdamW with warm-up, a checkpoint per epoch holding
  every state a resume needs), per ``train.log``, the checkpoints and MLflow;
- :func:`interrupt_after_first_epoch`: start the job, SIGTERM the launcher (as SLURM does at a time
  limit) once epoch 1 is checkpointed and logged, and check that every process stopped cleanly;
- :func:`assert_resume_matches`: in a scratch clone of the project, interrupt the job, rerun it, and
  check that it resumed and ended with the weights and states of the project's own uninterrupted run,
  bit for bit (a list of what differs otherwise).
"""
from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import torch

from pipeline.engine.train import KEEP_CHECKPOINTS

PROFILE = "rehearsal"
# what a clone of a project takes (copied; data is linked: the job only reads it)
PROJECT_FILES = ("Snakefile", "params.yaml", "workflow", "pipeline", "pretrained")
# per-epoch metrics that measure the machine, not the training
TIMING_METRICS = ("epoch_time_s", "images_per_s")


# ----------------------------------------------------------------------------- paths and commands
def train_command(run: str, seed: int = 0, profile: str = PROFILE) -> list[str]:
    """The train rule's command (workflow/rules/train.smk), run from the project root."""
    return [sys.executable, "-m", "pipeline", "--profile", profile, "train", "--run", run, "--seed", str(seed)]


def run_dir(project_dir: Path, run: str, seed: int = 0, profile: str = PROFILE) -> Path:
    return Path(project_dir) / "results" / profile / "runs" / run / f"seed{seed}"


def store_path(project_dir: Path, env: Mapping[str, str]) -> Path:
    """The SQLite file of the job's MLflow store: ``MLFLOW_TRACKING_URI`` or params.yaml's default
    ``sqlite:///mlflow.db``, a relative path being the project root's (where the jobs run)."""
    uri = env.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    assert uri.startswith("sqlite:///"), f"these checks read a SQLite MLflow store, not {uri}"
    return Path(project_dir) / uri[len("sqlite:///"):]  # an absolute path stays itself


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


# ----------------------------------------------------------------------------- MLflow (read directly)
def _query(project_dir: Path, env: Mapping[str, str], sql: str, args: tuple = ()) -> list[tuple]:
    con = sqlite3.connect(store_path(project_dir, env), timeout=30)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def mlflow_runs(project_dir: Path, env: Mapping[str, str], run: str, seed: int = 0) -> list[tuple[str, str]]:
    """(run id, status) of every active MLflow run of ``run``/``seed``, oldest first."""
    return _query(project_dir, env, "SELECT run_uuid, status FROM runs WHERE name = ? "
                  "AND lifecycle_stage = 'active' ORDER BY start_time", (f"{run}-seed{seed}",))


def mlflow_params(project_dir: Path, env: Mapping[str, str], run_id: str) -> dict[str, str]:
    return dict(_query(project_dir, env, "SELECT key, value FROM params WHERE run_uuid = ?", (run_id,)))


def mlflow_steps(project_dir: Path, env: Mapping[str, str], run_id: str, key: str = "train/loss") -> list[int]:
    return sorted(s for (s,) in _query(project_dir, env, "SELECT step FROM metrics WHERE run_uuid = ? AND key = ?",
                                       (run_id, key)))


# ----------------------------------------------------------------------------- processes
def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # field 4: the parent's id
                out.append(int(entry.name))
    return out


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (Linux /proc)."""
    found, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        found += kids
        todo += kids
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    t0 = time.time()
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the job ended (status {proc.returncode}) before {what}")
        assert time.time() - t0 < timeout, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.2)


def _kill_leftovers(pids: list[int]) -> None:
    """SIGKILL processes this check started that are still running (only after a failed check)."""
    for pid in pids:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# ----------------------------------------------------------------------------- the job
def train(project_dir: Path, run: str, env: Mapping[str, str], *, seed: int = 0, profile: str = PROFILE,
          timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the job to its end; it must succeed without a traceback."""
    res = subprocess.run(train_command(run, seed, profile), cwd=project_dir, env=dict(env), capture_output=True,
                         text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "Traceback" not in res.stderr, res.stderr[-4000:]
    return res


def assert_node_job(project_dir: Path, run: str, env: Mapping[str, str], *, seed: int = 0,
                    profile: str = PROFILE, world_size: int = 2, amp: str = "float16") -> dict[str, Any]:
    """The finished job trained as on a node; returns its final checkpoint."""
    out = run_dir(project_dir, run, seed, profile)
    final = _load(out / "final.pth")
    cfg, epochs = final["config"], final["config"]["train"]["epochs"]
    t = cfg["train"]
    assert t["gpus"] == world_size and t["sync_bn"] and t["amp"] and t["amp_dtype"] == amp
    assert t["optimizer"] == "adamw" and t["warmup_iters"] > 0
    assert [h["epoch"] for h in final["history"]] == list(range(1, epochs + 1))
    assert not any(k.startswith("module.") for k in final["model"])

    log_text = (out / "train.log").read_text()
    assert f"× {world_size} processes" in log_text
    assert f"BatchNorm layers normalise over all {world_size} processes" in log_text
    assert f"mixed precision on cpu: autocast {amp}" in log_text
    if amp == "float16":
        assert "autocast float16 with a GradScaler" in log_text
    assert "training in float32" not in log_text

    # the newest epoch checkpoints (older ones are pruned), each with what a resume restores in every process
    kept = sorted(p.name for p in (out / "checkpoints").glob("epoch_*.pth"))
    assert kept == [f"epoch_{e:03d}.pth" for e in range(max(1, epochs - KEEP_CHECKPOINTS + 1), epochs + 1)]
    steps_per_epoch = None
    for epoch in range(max(1, epochs - KEEP_CHECKPOINTS + 1), epochs + 1):
        ckpt = _load(out / "checkpoints" / f"epoch_{epoch:03d}.pth")
        assert ckpt["epoch"] == epoch and ckpt["world_size"] == world_size
        assert len(ckpt["rng"]) == world_size and all(r["torch"] is not None for r in ckpt["rng"])
        assert (ckpt["scaler"] is not None) == (amp == "float16")
        if amp == "float16":
            assert ckpt["scaler"]["scale"] > 0
        iteration = ckpt["scheduler"]["iteration"]
        steps_per_epoch = steps_per_epoch or iteration // epoch
        assert iteration == epoch * steps_per_epoch > 0  # the warm-up's position: every step counted
        assert len(ckpt["optimizer"]["param_groups"]) == 2  # AdamW: decayed and spared parameters

    # MLflow: one finished run, every epoch logged once, the settings it actually ran with
    runs = mlflow_runs(project_dir, env, run, seed)
    assert [s for _, s in runs].count("FINISHED") >= 1, runs
    run_id = final["mlflow_run_id"]
    assert dict(runs)[run_id] == "FINISHED", runs
    assert mlflow_steps(project_dir, env, run_id) == list(range(1, epochs + 1))
    params = mlflow_params(project_dir, env, run_id)
    assert params["world_size"] == str(world_size) and params["train.gpus"] == str(world_size)
    assert params["train.sync_bn"] == "True" and params["train.amp_dtype"] == amp
    assert params["amp_used"] == amp and params["device_used"] == "cpu"
    assert params["train.optimizer"] == "adamw"
    return final


def interrupt_after_first_epoch(project_dir: Path, run: str, env: Mapping[str, str], *, seed: int = 0,
                                profile: str = PROFILE, timeout: float = 600) -> dict[str, Any]:
    """Start the job, send SIGTERM to the launcher once epoch 1 is checkpointed and its metrics are in
    MLflow (so the signal lands in epoch 2), and check the stop: the launcher ends with status 143,
    every process under it (torchrun, both workers, their data-loading processes) has ended, each
    process said so in one ``error:`` (or torchrun) line without a traceback, the MLflow run is KILLED,
    no temporary file is left and no final checkpoint was written. Returns what it saw."""
    out = run_dir(project_dir, run, seed, profile)
    first = out / "checkpoints" / "epoch_001.pth"
    assert not first.exists(), f"{first} exists: the job would resume from it, not start over"
    proc = subprocess.Popen(train_command(run, seed, profile), cwd=project_dir, env=dict(env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[int] = []
    try:
        _wait_for(first.exists, timeout, f"{first}", proc)

        def epoch_1_logged() -> bool:
            return any(mlflow_steps(project_dir, env, r) == [1]
                       for r, status in mlflow_runs(project_dir, env, run, seed) if status == "RUNNING")

        _wait_for(epoch_1_logged, 120, "epoch 1's metrics in MLflow", proc)
        seen = descendants(proc.pid)
        assert len(seen) >= 3, f"expected torchrun and two workers under the launcher, found {seen}"
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=180)
        stop_s = time.time() - t0
        lingering = [pid for pid in seen if alive(pid)]
        assert not lingering, f"still running after the launcher ended: {lingering}\n{err[-3000:]}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        _kill_leftovers(seen)
    assert proc.returncode == 143, err[-4000:]
    assert "Traceback" not in err and "Exception ignored" not in err, err[-4000:]
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 3, err[-4000:]  # the launcher and both workers
    assert all(f"train --run {run}" in ln and "stopped by SIGTERM" in ln for ln in errors), errors
    assert "torchrun: stopped by SIGTERM" in err
    assert [s for _, s in mlflow_runs(project_dir, env, run, seed)] == ["KILLED"]
    assert not (out / "final.pth").exists() and not (out / "train_summary.json").exists()
    assert not list(Path(project_dir, "results").rglob("*.tmp"))
    epochs_done = sorted(p.name for p in (out / "checkpoints").glob("epoch_*.pth"))
    assert epochs_done and epochs_done[0] == "epoch_001.pth"
    _load(out / "checkpoints" / epochs_done[-1])  # readable
    return {"stderr": err, "stop_s": stop_s, "checkpoints": epochs_done, "pids": seen}


# ----------------------------------------------------------------------------- resume
def clone_project(project_dir: Path, dst: Path, env: Mapping[str, str], *, profile: str = PROFILE
                  ) -> dict[str, str]:
    """A scratch copy of the project to train in, with its own MLflow store (returned: the clone's
    environment): the code and configuration copied, ``data`` linked, no results."""
    project_dir, dst = Path(project_dir), Path(dst)
    dst.mkdir(parents=True)
    for name in PROJECT_FILES:
        src = project_dir / name
        if src.is_dir():
            shutil.copytree(src, dst / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy(src, dst / name)
    (dst / "profiles").symlink_to("workflow/profiles")
    (dst / "data").symlink_to((project_dir / "data").resolve())
    clone_env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{dst / 'mlflow.db'}"}
    res = subprocess.run([sys.executable, "-m", "pipeline", "--profile", profile, "mlflow-init"], cwd=dst,
                         env=clone_env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return clone_env


def state_differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Where two checkpoint states differ (tensors bit for bit, everything else by ``==``)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b))
        return [] if same else [where or "(tensor)"]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys {sorted(map(str, a.keys() ^ b.keys()))[:5]}"]
        return [d for k in a for d in state_differences(a[k], b[k], f"{where}.{k}" if where else str(k))]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in state_differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [where or "(value)"]


def _trajectory(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in TIMING_METRICS} for row in history]


def assert_resume_matches(project_dir: Path, run: str, env: Mapping[str, str], *, seed: int = 0,
                          profile: str = PROFILE, scratch: Path | None = None) -> dict[str, Any]:
    """A job stopped by SIGTERM in epoch 2 and run again resumes and ends exactly where the project's own
    uninterrupted run of the same command ended: the same final weights (``final.pth``, bit for bit),
    the same last-epoch states (optimiser, loss scaler, schedule and warm-up position, every process's
    RNGs, SyncBN running statistics) and the same per-epoch metrics (timings aside).

    ``project_dir`` must hold that run finished (:func:`train`) by the current code and configuration;
    the interrupted job runs in a clone (``scratch``, default ``<project_dir>-resume``), so the project
    itself is left as it is. Returns the interruption's record and the rerun's seconds."""
    reference_dir = run_dir(project_dir, run, seed, profile)
    reference = _load(reference_dir / "final.pth")
    epochs = reference["config"]["train"]["epochs"]
    ref_last = _load(reference_dir / "checkpoints" / f"epoch_{epochs:03d}.pth")
    if scratch is None:
        scratch = Path(project_dir).with_name(Path(project_dir).name + "-resume")
    scratch = Path(scratch)
    clone_env = clone_project(project_dir, scratch, env, profile=profile)

    stopped = interrupt_after_first_epoch(scratch, run, clone_env, seed=seed, profile=profile)
    out = run_dir(scratch, run, seed, profile)
    first = _load(out / "checkpoints" / "epoch_001.pth")
    for key in ("config_hash", "code_hash"):
        assert first[key] == ref_last[key], (
            f"the reference run in {reference_dir} was trained under another {key.split('_')[0]} "
            "(retrain it with the current project before comparing)")
    killed = mlflow_runs(scratch, clone_env, run, seed)[0][0]

    t0 = time.time()
    train(scratch, run, clone_env, seed=seed, profile=profile)
    rerun_s = time.time() - t0
    log_text = (out / "train.log").read_text()
    resumed = f"resuming {run} from {Path('results') / profile / 'runs' / run / f'seed{seed}' / 'checkpoints'}"
    assert resumed in log_text, log_text[-3000:]
    resumed_from = stopped["checkpoints"][-1]
    assert f"{resumed_from}: epoch {int(resumed_from[6:9]) + 1} of {epochs}" in log_text
    # the same MLflow run, now finished, each epoch logged once
    assert mlflow_runs(scratch, clone_env, run, seed) == [(killed, "FINISHED")]
    assert mlflow_steps(scratch, clone_env, killed) == list(range(1, epochs + 1))

    final = _load(out / "final.pth")
    last = _load(out / "checkpoints" / f"epoch_{epochs:03d}.pth")
    differ = {
        "final.pth model": state_differences(reference["model"], final["model"]),
        **{f"epoch_{epochs:03d}.pth {key}": state_differences(ref_last[key], last[key])
           for key in ("model", "optimizer", "scheduler", "scaler", "rng")},
        "history": state_differences(_trajectory(reference["history"]), _trajectory(final["history"])),
    }
    differ = {k: v for k, v in differ.items() if v}
    assert not differ, "the resumed run differs from the uninterrupted one: " + "; ".join(
        f"{k}: {len(v)} entries, e.g. {v[:4]}" for k, v in differ.items())
    return {**stopped, "rerun_s": rerun_s, "clone": scratch}
