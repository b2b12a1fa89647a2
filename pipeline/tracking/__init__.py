"""Experiment tracking (MLflow): the store, the runs, their tags and metric histories."""
from .mlflow_store import (connect, finished_runs, flatten, init_store, metric_history, open_run,
                           table_tags)

__all__ = ["connect", "finished_runs", "flatten", "init_store", "metric_history", "open_run", "table_tags"]
