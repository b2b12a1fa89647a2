"""SIGTERM is held back while an MLflow write commits, and raised right after it (pipeline.termination)."""
from __future__ import annotations

import os
import signal

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
