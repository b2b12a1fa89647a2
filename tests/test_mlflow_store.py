"""The MLflow store's failure paths (pipeline.tracking.mlflow_store): each ends as one line naming the store
and the cause, and a remote store (an MLflow server on a cluster) is used as it is."""
from __future__ import annotations

import logging
import sqlite3

import pytest
from mlflow.exceptions import MlflowException

from pipeline.errors import PipelineError
from pipeline.tracking import mlflow_store as ms


def test_busy_timeout_from_the_environment(monkeypatch):
    monkeypatch.setenv(ms.BUSY_TIMEOUT_ENV, "2.5")
    assert ms.busy_timeout() == 2.5
    monkeypatch.setenv(ms.BUSY_TIMEOUT_ENV, "-3")
    assert ms.busy_timeout() == 0.0
    monkeypatch.setenv(ms.BUSY_TIMEOUT_ENV, "a minute")
    with pytest.raises(PipelineError) as exc:
        ms.busy_timeout()
    assert str(exc.value) == f"{ms.BUSY_TIMEOUT_ENV}: must be a number of seconds, got 'a minute'"


@pytest.mark.parametrize("text, cause", [
    ("attempt to write a readonly database", "the MLflow store is read-only: make the file and its folder writable"),
    ("(sqlite3.OperationalError) unable to open database file",
     "cannot open the MLflow store (missing folder or no permission)"),
    ("disk I/O error\nsecond line", "MLflow store error (disk I/O error)"),
    ("", "MLflow store error (unknown error)"),
])
def test_store_errors_are_described_in_one_line(text, cause):
    assert ms._describe_store_error(text) == cause


def test_a_folder_where_the_store_should_be_cannot_be_opened(tmp_path):
    with pytest.raises(PipelineError) as exc:
        ms.check_sqlite_store(tmp_path, write=False)  # sqlite3 cannot open a folder as a database
    assert exc.value.where == str(tmp_path) and exc.value.what.startswith("cannot open the MLflow store (")


def test_store_errors_convert_only_the_store_s_own_exceptions():
    uri = "sqlite:///some/mlflow.db"
    with pytest.raises(ValueError, match="ours"):  # a bug of ours keeps its traceback
        with ms.store_errors(uri):
            raise ValueError("ours")
    with pytest.raises(PipelineError) as exc:
        with ms.store_errors(uri):
            raise sqlite3.OperationalError("database is locked")
    assert exc.value.where == "some/mlflow.db" and exc.value.what.startswith("MLflow store is locked")


def test_a_missing_store_or_folder_names_the_stage_to_run(tmp_path, monkeypatch):
    monkeypatch.delenv("HDM_MLFLOW_ALLOW_CREATE", raising=False)
    with pytest.raises(PipelineError, match="MLflow store not found: run the `mlflow-init` stage first"):
        ms.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tmp_path / "file").write_text("")
    with pytest.raises(PipelineError) as exc:
        ms.init_store(f"sqlite:///{tmp_path / 'file' / 'mlflow.db'}", "exp")
    assert exc.value.where == str(tmp_path / "file")
    assert exc.value.what.startswith("cannot create the MLflow store's folder (")


def test_remote_artifact_locations_are_accepted_and_local_ones_must_be_in_the_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for location in ("mlflow-artifacts:/1/abc/artifacts", "s3://bucket/mlruns/1", ""):
        ms.check_artifact_location("http://mlflow.cluster:5000", location, "experiment 'x'")
    ms.check_artifact_location("sqlite:///mlflow.db", f"file://{tmp_path}/mlruns/1", "experiment 'x'")
    with pytest.raises(PipelineError, match=r"keeps its artifacts in /elsewhere/mlruns/1, outside this project"):
        ms.check_artifact_location("sqlite:///mlflow.db", "file:///elsewhere/mlruns/1", "experiment 'x'")
    assert ms.store_name("http://mlflow.cluster:5000") == "http://mlflow.cluster:5000"


class _FakeMlflow:
    """Stands for the mlflow module where a store fails in a way a real store cannot be made to."""

    def get_run(self, run_id):
        raise MlflowException("INTERNAL_ERROR: the server failed", error_code="INTERNAL_ERROR")

    def end_run(self, status):
        raise sqlite3.OperationalError("disk I/O error")


def test_a_failing_store_is_an_error_not_a_missing_run(caplog):
    with pytest.raises(PipelineError) as exc:
        ms._existing_run(_FakeMlflow(), "http://mlflow.cluster:5000", "abc")
    assert exc.value.where == "http://mlflow.cluster:5000" and "INTERNAL_ERROR" in exc.value.what
    with caplog.at_level(logging.WARNING, logger=ms.__name__):
        ms._end_run(_FakeMlflow(), "FAILED")  # only logged: the error that ended the run matters
    assert caplog.messages == ["could not mark the MLflow run FAILED (MLflow store error (disk I/O error))"]
    with pytest.raises(PipelineError, match="its checkpoint names no MLflow run: train the run again"):
        ms.require_run("sqlite:///mlflow.db", None, "coco_hrnet_w32_mse")


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    """One store for the module (creating one migrates its schema: seconds); its folder is the project."""
    d = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        ms.init_store(f"sqlite:///{d / 'mlflow.db'}", "exp")
    return d


@pytest.fixture
def store(store_dir, monkeypatch):
    monkeypatch.chdir(store_dir)
    return f"sqlite:///{store_dir / 'mlflow.db'}"


def test_a_run_missing_from_the_store(store, caplog):
    gone = "0123456789abcdef0123456789abcdef"
    with pytest.raises(PipelineError, match=f"MLflow run {gone} of 'r' is not in this store"):
        with ms.open_run(store, "exp", run_name="r", run_id=gone, missing="error"):
            pass
    with caplog.at_level(logging.WARNING, logger=ms.__name__):
        with ms.open_run(store, "exp", run_name="r", run_id=gone, missing="new") as mlflow:
            new_id = mlflow.active_run().info.run_id
    assert new_id != gone
    assert any(f"MLflow run {gone} not found" in m and "starting a new run" in m for m in caplog.messages)
    assert ms.finished_runs(store, "no-such-experiment").empty



def test_server_scores_need_an_evaluated_run(store, tmp_path):
    from pipeline.metrics.coco_server import log_server_scores

    scores = tmp_path / "scores.json"
    scores.write_text('{"AP": 0.75}')
    for experiment in ("exp", "no-such-experiment"):  # runs without evaluated tags / no experiment at all
        with pytest.raises(PipelineError) as exc:
            log_server_scores(scores, run="coco_hrnet_w32_mse", seed=0, tracking_uri=store, experiment=experiment)
        assert exc.value.where == "--run coco_hrnet_w32_mse --seed 0"
        assert exc.value.what.startswith(f"no finished, evaluated MLflow run of that run and seed in experiment "
                                         f"{experiment!r}")
        assert exc.value.what.endswith("(python -m pipeline evaluate --run coco_hrnet_w32_mse --seed 0)")


def test_a_report_of_a_store_without_evaluated_runs_is_empty(store):
    from pipeline.report.build import collect

    records, info, rows = collect(store, "exp", ["coco_hrnet_w32_mse"], [0])
    assert records == {} and info == {} and rows.empty
