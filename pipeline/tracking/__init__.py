"""Experiment tracking (MLflow): the store, the runs, their tags and metric histories."""
from .mlflow_store import (connect, finished_runs, flatten, init_store, log_new_metrics, logged_steps,
                           metric_history, open_run, require_run, store_errors)

__all__ = ["connect", "finished_runs", "flatten", "init_store", "log_new_metrics", "logged_steps",
           "metric_history", "open_run", "require_run", "store_errors"]
