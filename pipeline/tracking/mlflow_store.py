"""MLflow bookkeeping: one store, one experiment per profile, one MLflow run per benchmark run.

The training stage opens the run (params, per-epoch curves, tags naming its table rows); the
evaluation stage reopens the same run by id and adds the final metrics and artifacts; the report
stage searches the experiment. The SQLite store is created once by :func:`init_store` before
any parallel job starts, because several processes creating a fresh SQLite store at once race on
its schema migration and corrupt it.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Iterator

from ..errors import PipelineError

log = logging.getLogger(__name__)

def table_tags(run_name: str) -> dict[str, str]:
    """Tags naming the paper tables and the row a run fills, so the MLflow UI can filter by table.

    The mapping is the report's own (:mod:`pipeline.report.paper_numbers`), so tags and tables agree.
    """
    from ..report.paper_numbers import TABLES

    tables = [str(t.number) for t in TABLES if run_name in t.runs()]
    return {"tables": ",".join(tables), "row": run_name}


def _quiet_mlflow() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    for name in ("mlflow", "alembic", "alembic.runtime.migration", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):])
    return None


def connect(uri: str) -> Any:
    """Point MLflow at ``uri`` and return the module (imported lazily: it is slow to import)."""
    _quiet_mlflow()
    import mlflow

    db = _sqlite_path(uri)
    if db is not None and not db.exists() and os.environ.get("HDM_MLFLOW_ALLOW_CREATE") != "1":
        raise PipelineError(str(db), "MLflow store not found: run the `mlflow-init` stage first "
                                     "(python -m pipeline mlflow-init)")
    mlflow.set_tracking_uri(uri)
    return mlflow


def init_store(uri: str, experiment: str) -> dict[str, str]:
    """Create the store (schema migration happens here, once) and the profile's experiment."""
    os.environ["HDM_MLFLOW_ALLOW_CREATE"] = "1"
    try:
        mlflow = connect(uri)
        db = _sqlite_path(uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        exp = mlflow.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else mlflow.create_experiment(experiment)
    finally:
        os.environ.pop("HDM_MLFLOW_ALLOW_CREATE", None)
    return {"tracking_uri": uri, "experiment": experiment, "experiment_id": str(exp_id)}


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → flat ``a.b.c`` params (MLflow params are flat strings)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


@contextlib.contextmanager
def open_run(uri: str, experiment: str, *, run_name: str, run_id: str | None = None,
             tags: dict[str, str] | None = None) -> Iterator[Any]:
    """Start a new MLflow run (or resume ``run_id``) and yield the mlflow module.

    On an exception the run is marked FAILED, so the report never mistakes it for a result.
    """
    mlflow = connect(uri)
    if run_id is not None:
        try:
            mlflow.get_run(run_id)
        except Exception:  # the store was reset since training: start a fresh run
            log.warning("MLflow run %s not found in %s; starting a new run", run_id, uri)
            run_id = None
    exp = mlflow.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else mlflow.create_experiment(experiment)
    mlflow.start_run(run_id=run_id, experiment_id=None if run_id else exp_id,
                     run_name=None if run_id else run_name, tags=tags)
    try:
        yield mlflow
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run(status="FINISHED")


def finished_runs(uri: str, experiment: str) -> "Any":
    """All evaluated runs of the experiment as a DataFrame, newest first (one row per run)."""
    mlflow = connect(uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        import pandas as pd

        return pd.DataFrame()
    return mlflow.search_runs(experiment_ids=[exp.experiment_id],
                              filter_string="attributes.status = 'FINISHED' and tags.evaluated = 'true'",
                              order_by=["attributes.start_time DESC"])


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """Per-epoch values of one metric of one run, as (step, value) pairs."""
    mlflow = connect(uri)
    client = mlflow.tracking.MlflowClient()
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
