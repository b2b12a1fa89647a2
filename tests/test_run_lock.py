"""One process per run (pipeline.engine.run_lock): a second training or an evaluation of a run being trained
stops with one line naming the holder; a killed holder's lock is taken over; the lock goes with its holder
on every exit (smoke profile)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from run_project import (RUN, RUN_DIR, build_base, cli, edit_params, metric_steps, one_error, runs, smoke_train,
                         start, use_copy, wait_for)

LOCK = RUN_DIR / "run.lock"
# A process that holds a run's lock until its stdin closes
HOLDER = """
import sys
from pipeline.engine.run_lock import run_lock
with run_lock(sys.argv[1], sys.argv[2]):
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_base(tmp_path_factory.mktemp("run_lock"))


@pytest.fixture
def proj(base, tmp_path, monkeypatch):
    return use_copy(base, tmp_path / "p", monkeypatch)


def _hold(d, activity: str) -> subprocess.Popen:
    """A child process holding the run's lock (``activity``: what it says it does)."""
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(RUN_DIR), activity], cwd=d,
                         env={**os.environ, "PYTHONPATH": str(d)}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def _eval_outputs(d) -> list:
    """The evaluation's files of the run (its log aside: the CLI opens it before the stage starts)."""
    folder = d / f"results/smoke/eval/{RUN}/seed0"
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix != ".log") if folder.exists() else []


def _let_go(p: subprocess.Popen) -> None:
    p.stdin.close()
    p.wait(timeout=60)


def test_a_second_training_of_the_run_stops_naming_the_first(proj, capsys):
    edit_params(proj, lambda p: smoke_train(p, batch_size=1, epochs=3))  # a retrain whose epochs take seconds
    first = start(proj, "train", "--run", RUN)
    try:
        wait_for(lambda: first.poll() is not None or any(
            n == f"{RUN}-seed0" and s == "RUNNING" for n, s, _ in runs(proj)))
        rc, err = cli(capsys, "train", "--run", RUN)
        one_error(rc, err, f"error: {RUN_DIR}: run is being trained by process {first.pid} (since ")
        assert json.loads(LOCK.read_text())["pid"] == first.pid  # the refused process left it alone
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 143, err[-3000:]
    assert not LOCK.exists()  # released by the SIGTERM's unwinding
    running = [r for n, s, r in runs(proj) if n == f"{RUN}-seed0" and s == "KILLED"]
    assert len(running) == 1
    steps = metric_steps(proj, running[0])
    assert len(steps) == len(set(steps))  # each epoch logged once


def test_evaluation_and_training_exclude_each_other(proj, capsys):
    holder = _hold(proj, "trained")
    try:
        one_error(*cli(capsys, "evaluate", "--run", RUN), f"{RUN_DIR}: run is being trained by process {holder.pid}")
        assert _eval_outputs(proj) == []  # stopped before the checkpoint was read: no output, no MLflow write
    finally:
        _let_go(holder)
    holder = _hold(proj, "evaluated")
    try:
        one_error(*cli(capsys, "train", "--run", RUN), f"{RUN_DIR}: run is being evaluated by process {holder.pid}")
    finally:
        _let_go(holder)
    assert not LOCK.exists()
    rc, err = cli(capsys, "train", "--run", RUN)  # free again
    assert rc == 0, err[-2000:]
    assert not LOCK.exists()


def test_the_lock_of_a_killed_process_is_taken_over(proj, capsys):
    holder = _hold(proj, "trained")
    holder.kill()  # SIGKILL: no chance to remove its record
    holder.wait(timeout=60)
    assert json.loads(LOCK.read_text())["pid"] == holder.pid
    rc, err = cli(capsys, "train", "--run", RUN)
    assert rc == 0, err[-2000:]
    log_text = (proj / RUN_DIR / "train.log").read_text()
    assert f"run.lock: taking over the lock of process {holder.pid} on " in log_text
    assert "which ended without releasing it" in log_text
    assert not LOCK.exists()


def test_a_locked_run_stops_every_process_of_a_ddp_job(proj):
    """Rank 0 takes the lock for a torchrun job and tells the other process: both stop at once, none
    is left waiting for rank 0 in a collective."""
    edit_params(proj, lambda p: smoke_train(p, gpus=2))
    holder = _hold(proj, "trained")
    job = start(proj, "train", "--run", RUN)
    try:
        _, err = job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
        _let_go(holder)
    # each process's own line, then torchrun's report of its failed workers (as for any worker's error)
    assert job.returncode == 1, err[-3000:]
    refused = [ln for ln in err.splitlines() if ln.startswith("error:") and "run is being trained" in ln]
    assert len(refused) == 1 and f"by process {holder.pid}" in refused[0], err[-3000:]
    assert any("rank 0 could not take the run's lock" in ln for ln in err.splitlines()), err[-3000:]
    assert "torchrun exited with status 1" in err
