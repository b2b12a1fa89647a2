"""Experiment tracking (MLflow): the store, the runs, their tags and metric histories."""
from .mlflow_store import (check_server, connect, finished_runs, flatten, http_settings, init_store,
                           log_new_metrics, logged_steps, metric_history, open_run, require_run, store_errors)

__all__ = ["check_server", "connect", "finished_runs", "flatten", "http_settings", "init_store",
           "log_new_metrics", "logged_steps", "metric_history", "open_run", "require_run", "store_errors"]
