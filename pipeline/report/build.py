"""The report stage: read the evaluated runs from MLflow and write Tables 1–5 and the figures.

MLflow is the record of truth: the latest finished, evaluated run of each name in the profile's
experiment fills its rows; a run that never finished stays "not run".
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from .. import io
from ..metrics import coco_server
from ..tracking import finished_runs, metric_history
from .tables import build_tables, write_figures, write_tables

log = logging.getLogger(__name__)


def collect(tracking_uri: str, experiment: str, run_names: list[str]) -> tuple[dict, dict, pd.DataFrame]:
    """(measured metrics per run, run info per run, the selected MLflow rows)."""
    df = finished_runs(tracking_uri, experiment)
    measured: dict[str, dict[str, float]] = {}
    info: dict[str, dict[str, Any]] = {}
    if df.empty:
        return measured, info, df
    df = df[df["tags.mlflow.runName"].isin(run_names)].drop_duplicates("tags.mlflow.runName", keep="first")
    metric_cols = [c for c in df.columns if c.startswith("metrics.") and "." in c[len("metrics."):]]
    for _, row in df.iterrows():
        name = row["tags.mlflow.runName"]
        measured[name] = {c[len("metrics."):]: float(row[c]) for c in metric_cols if pd.notna(row[c])}
        w, h = (row.get("params.data.input_size") or "[?, ?]").strip("[]").split(",")
        info[name] = {"backbone": f"{row.get('params.model.backbone')}"
                                  + (f" ×{row['params.model.width']}" if pd.notna(row.get("params.model.width")) else ""),
                      "input_size": f"{h.strip()}×{w.strip()}",
                      "mlflow_run_id": row["run_id"]}
        _testdev(name, row, measured[name], info[name])
    return measured, info, df


def _tag(row: pd.Series, key: str) -> str:
    v = row.get(f"tags.{key}")
    return v if isinstance(v, str) else ""


def _testdev(name: str, row: pd.Series, metrics: dict[str, float], info: dict[str, Any]) -> None:
    """Test-dev bookkeeping: flag a submission awaiting the server's scores (Table 2 says so), and
    drop server scores that belong to an earlier results file (the run was evaluated again since)."""
    info["testdev_submitted"] = bool(_tag(row, coco_server.TAG_SUBMISSION))
    results_sha = _tag(row, coco_server.TAG_RESULTS_SHA)
    if (_tag(row, coco_server.TAG_SOURCE) == "server" and results_sha
            and _tag(row, coco_server.TAG_SCORED_SHA) != results_sha):
        log.warning("%s: the COCO server's test-dev scores are for an earlier results file; upload %s "
                    "and load the new scores (python -m pipeline testdev-scores)",
                    name, _tag(row, coco_server.TAG_SUBMISSION))
        for k in [k for k in metrics if k.startswith(coco_server.TESTDEV_PREFIX + ".")]:
            del metrics[k]


def curves(tracking_uri: str, selected: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per-epoch train loss and validation metric of every selected run."""
    out = {}
    for _, row in selected.iterrows():
        key = "val_AP" if row["tags.mlflow.runName"].startswith("coco_") else "val_PCKh"
        loss = dict(metric_history(tracking_uri, row["run_id"], "train_loss"))
        val = dict(metric_history(tracking_uri, row["run_id"], key))
        epochs = sorted(set(loss) | set(val))
        out[row["tags.mlflow.runName"]] = pd.DataFrame(
            {"epoch": epochs, "train_loss": [loss.get(e) for e in epochs], "val_metric": [val.get(e) for e in epochs]})
    return out


def build_report(*, profile: str, tracking_uri: str, experiment: str, run_names: list[str],
                 out_dir: Path) -> list[Path]:
    measured, info, selected = collect(tracking_uri, experiment, run_names)
    missing = sorted(set(run_names) - set(measured))
    if missing:
        log.warning("no evaluated MLflow run for: %s (their rows say 'not run')", ", ".join(missing))
    tables = build_tables(measured, profile=profile, run_info=info)
    written = write_tables(tables, out_dir, profile=profile)
    if not selected.empty:
        written += write_figures(curves(tracking_uri, selected), out_dir)
    io.write_json(out_dir / "measured.json", {"profile": profile, "experiment": experiment,
                                               "runs": measured, "run_info": info})
    return written
