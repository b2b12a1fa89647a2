"""Test helper: a smoke project with one trained COCO run, copied per test, and the CLI's failure contract.

Used by the tests of training's reliability (resume identity, the run lock, write failures, divergence):
each module builds its base project once (data, store, one 2-epoch run: seconds, in-process) and each
test breaks its own copy.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import yaml

from pipeline.cli import main
from project_copy import copy_project

RUN = "coco_hrnet_w32_mse"
RUN_DIR = Path(f"results/smoke/runs/{RUN}/seed0")


def edit_params(d: Path, edit: Callable[[dict], None]) -> None:
    params = yaml.safe_load((d / "params.yaml").read_text())
    edit(params)
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def smoke_train(params: dict, **train) -> None:
    """``params`` edited: the smoke profile with ``train`` overrides."""
    params["profile"] = "smoke"
    params["profiles"]["smoke"]["train"].update(train)


def build_base(d: Path) -> Path:
    """``d`` as a smoke project after data, mlflow-init and a 2-epoch training of :data:`RUN`."""
    copy_project(d)
    edit_params(d, lambda p: smoke_train(p))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
        for args in (["data", "--dataset", "coco"], ["mlflow-init"], ["train", "--run", RUN]):
            assert main(["--quiet", *args]) == 0, args
    return d


def use_copy(base: Path, dst: Path, monkeypatch) -> Path:
    """:func:`copy_base` as the working directory and MLflow store of the test."""
    d = copy_base(base, dst)
    monkeypatch.chdir(d)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
    return d


def copy_base(base: Path, dst: Path) -> Path:
    """A copy of the base project whose store keeps its artifacts in the copy (as a project's own would)."""
    shutil.copytree(base, dst, symlinks=True)
    con = sqlite3.connect(dst / "mlflow.db")
    for table, col in (("experiments", "artifact_location"), ("runs", "artifact_uri")):
        con.execute(f"UPDATE {table} SET {col} = replace({col}, ?, ?)", (str(base), str(dst)))
    con.commit()
    con.close()
    return dst


def cli(capsys, *args: str) -> tuple[int, str]:
    """Exit status and stderr of ``python -m pipeline --quiet <args>`` run in this process."""
    capsys.readouterr()
    rc = main(["--quiet", *args])
    return rc, capsys.readouterr().err


def one_error(rc: int, err: str, *needles: str, status: int = 1) -> str:
    """The failure contract: exit status, no traceback, one ``error:`` line holding every needle."""
    assert rc == status, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def runs(d: Path) -> list[tuple[str, str, str]]:
    """(MLflow run name, status, run id) of every active run in the copy's store."""
    con = sqlite3.connect(d / "mlflow.db")
    try:
        return sorted(con.execute("SELECT name, status, run_uuid FROM runs WHERE lifecycle_stage = 'active'"))
    finally:
        con.close()


def metric_steps(d: Path, run_id: str, key: str = "train/loss") -> list[int]:
    """Every step at which ``key`` is logged in the run (a step logged twice appears twice)."""
    con = sqlite3.connect(d / "mlflow.db")
    try:
        return sorted(s for (s,) in con.execute("SELECT step FROM metrics WHERE run_uuid = ? AND key = ?",
                                                (run_id, key)))
    finally:
        con.close()


def leftovers(d: Path) -> list[Path]:
    """Temporary paths left under results/."""
    return sorted((d / "results").rglob("*.tmp"))


def start(d: Path, *args: str) -> subprocess.Popen:
    """``python -m pipeline --quiet <args>`` in project ``d`` as a child process."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{d / 'mlflow.db'}", "PYTHONPATH": str(d)}
    return subprocess.Popen([sys.executable, "-m", "pipeline", "--quiet", *args], cwd=d, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    t0 = time.time()
    while not condition():
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.02)
