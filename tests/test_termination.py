"""SIGTERM is held back while an MLflow write commits, and raised right after it (pipeline.termination);
a launcher of torchrun workers passes it on to them and waits for them to stop."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from pipeline.errors import Terminated
from pipeline.termination import deferred_termination, on_sigterm
from pipeline.tracking.mlflow_store import DeferredWrites


@pytest.fixture
def handler():
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    yield
    signal.signal(signal.SIGTERM, previous)


def _sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_outside_a_write_raises_at_once(handler):
    with pytest.raises(Terminated):
        _sigterm()


def test_sigterm_inside_a_write_waits_for_the_outermost_write_to_return(handler):
    done = []
    with pytest.raises(Terminated):
        with deferred_termination():
            with deferred_termination():
                _sigterm()
                done.append("inner write finished")
            done.append("outer write finished")  # still held back: the outer write is not done
    assert done == ["inner write finished", "outer write finished"]
    with deferred_termination():  # consumed: the next write is not interrupted
        done.append("later write")
    assert done[-1] == "later write"


def test_a_failing_write_keeps_its_own_error(handler):
    with pytest.raises(ValueError):
        with deferred_termination():
            _sigterm()
            raise ValueError("the store broke")
    with pytest.raises(Terminated):  # the held-back signal is not lost: raised after the next write
        with deferred_termination():
            pass


class _FakeMlflow:
    """Stands for the mlflow module: a write during which SIGTERM arrives, and a read."""

    def __init__(self) -> None:
        self.committed: list[dict] = []

    def log_metrics(self, metrics: dict, step: int = 0) -> None:
        _sigterm()  # arrives mid-commit
        self.committed.append(metrics)

    def active_run(self) -> str:
        return "run"


def test_open_runs_mlflow_writes_commit_before_the_sigterm_is_raised(handler):
    fake = _FakeMlflow()
    mlflow = DeferredWrites(fake)
    assert mlflow.active_run() == "run"  # reads pass through unchanged
    with pytest.raises(Terminated):
        mlflow.log_metrics({"train_loss": 0.5}, step=1)
    assert fake.committed == [{"train_loss": 0.5}]  # the write completed; the signal came after it
    raw = _FakeMlflow()
    with pytest.raises(Terminated):  # without the wrapper the signal lands inside the write
        raw.log_metrics({"train_loss": 0.5})
    assert raw.committed == []


# ----------------------------------------------------------------------------- a launcher of worker processes
# Stands for a training worker under torchrun: says it is ready, and on SIGTERM notes it (after
# STOP_DELAY seconds) and exits 143.
_WORKER = """
import os, signal, sys, time
from pathlib import Path
out, rank = Path(sys.argv[1]), os.environ["RANK"]
def stop(signum, frame):
    time.sleep(float(os.environ.get("STOP_DELAY", "0")))  # a training step to finish
    (out / f"stopped-{rank}").write_text(str(os.getpid()))
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
(out / f"grace-{rank}").write_text(os.environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", ""))
(out / f"ready-{rank}").write_text(str(os.getpid()))
while True:
    time.sleep(0.05)
"""

# `python -m pipeline train` of a run with train.gpus: 2, whose torchrun command starts _WORKER instead
# of `-m pipeline ...` (the launcher and torchrun are the real ones).
_LAUNCHER = """
import sys
from pipeline.engine import train
real = train.torchrun_command
train.torchrun_command = lambda n, args: real(n, args)[:-(len(args) + 2)] + [sys.argv[1], sys.argv[2]]
from pipeline.cli import main
sys.exit(main(["--params", sys.argv[3], "--quiet", "train", "--run", "coco_hrnet_w32_mse"]))
"""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _start_launcher(d: Path) -> subprocess.Popen:
    """The launcher of _LAUNCHER in ``d``, once both workers are ready (their pids in ready-<rank>)."""
    import sys
    import time

    import yaml

    root = Path(__file__).resolve().parent.parent
    for f in d.glob("*-[01]"):
        f.unlink()
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["profile"] = "smoke"
    params["profiles"]["smoke"]["train"]["gpus"] = 2
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (d / "worker.py").write_text(_WORKER)
    (d / "launcher.py").write_text(_LAUNCHER)
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", None)
    proc = subprocess.Popen([sys.executable, str(d / "launcher.py"), str(d / "worker.py"), str(d),
                             str(d / "params.yaml")], cwd=d, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not all((d / f"ready-{r}").exists() for r in (0, 1)):
        if proc.poll() is not None or time.time() - t0 > 120:
            proc.kill()
            raise AssertionError(proc.communicate()[1][-3000:])
        time.sleep(0.05)
    time.sleep(0.2)
    return proc


def _workers_stopped(pids: list[int], wait: float = 15.0) -> list[int]:
    """The workers still running after up to ``wait`` seconds (none once they have stopped)."""
    import time

    t0 = time.time()
    while any(_alive(pid) for pid in pids) and time.time() - t0 < wait:
        time.sleep(0.05)
    return [pid for pid in pids if _alive(pid)]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_sigterm_to_the_train_launcher_stops_every_torchrun_worker(tmp_path):
    """SIGTERM to `python -m pipeline train` (a SLURM time limit) while it waits for torchrun: the signal
    reaches both workers through torchrun, they stop, and only then does the launcher end (143, one
    line, no traceback from torchrun either); never a launcher gone and its workers left running.
    torchrun gives them 180 s (not its 30) before it kills them: a training step on a CPU may take 30."""
    proc = _start_launcher(tmp_path)
    pids: list[int] = []
    try:
        pids = [int((tmp_path / f"ready-{r}").read_text()) for r in (0, 1)]
        assert [(tmp_path / f"grace-{r}").read_text() for r in (0, 1)] == ["180", "180"]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        running = _workers_stopped(pids)
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)  # the workers held the pipes open while they ran
    assert not running, f"workers still running after the launcher ended: {running}"
    assert all((tmp_path / f"stopped-{r}").exists() for r in (0, 1)), err[-3000:]
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert lines == ["error: train --run coco_hrnet_w32_mse: stopped by SIGTERM; rerun the stage to continue "
                     "(training resumes from its last epoch checkpoint)"], err[-3000:]
    assert "torchrun: stopped by SIGTERM; its workers have stopped" in err


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_a_killed_train_launcher_still_stops_its_workers(tmp_path):
    """SIGKILL to the launcher (nothing it can forward): torchrun gets SIGTERM as its parent dies, and
    stops its workers the same way."""
    from node_checks import descendants

    proc = _start_launcher(tmp_path)
    pids = descendants(proc.pid)  # torchrun and the workers
    try:
        proc.kill()
        proc.wait(timeout=60)
        running = _workers_stopped(pids)
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not running, f"still running after the launcher was killed: {running}"
    assert all((tmp_path / f"stopped-{r}").exists() for r in (0, 1))


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_torchrun_waits_for_its_workers_through_a_second_sigterm(tmp_path):
    """A scheduler that signals every process of a job reaches torchrun twice (directly and through the
    launcher): torchrun still waits until its workers have stopped (torch's own shutdown does), then
    ends with one line, not the traceback of its second SignalException."""
    import sys
    import time

    from node_checks import descendants

    (tmp_path / "worker.py").write_text(_WORKER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "STOP_DELAY": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.torchrun", "--standalone", "--nproc_per_node=2",
                             str(tmp_path / "worker.py"), str(tmp_path)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        t0 = time.time()
        while not all((tmp_path / f"ready-{r}").exists() for r in (0, 1)):
            assert proc.poll() is None and time.time() - t0 < 120
            time.sleep(0.05)
        pids = descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        stopped = [(tmp_path / f"stopped-{r}").exists() for r in (0, 1)]
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert stopped == [True, True], err[-3000:]  # torchrun ended after its workers, not at the second signal
    assert proc.returncode == 143 and "Traceback" not in err, err[-3000:]
    assert "torchrun: stopped by SIGTERM; its workers have stopped" in err
