"""The report stage: read the evaluated runs from MLflow and write Tables 1–6, findings.md and the figures.

MLflow is the record of truth: the latest finished, evaluated MLflow run of each (run, seed) in the
profile's experiment counts; a row's measured line is the mean over its seeds with intervals
(:mod:`pipeline.report.aggregate`); a run that never finished stays "not run".
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from .. import io
from ..config import Paths
from ..metrics import coco_server
from ..tracking import finished_runs, metric_history
from ..tracking.metric_names import TRAIN, metric_key, split_key
from .aggregate import RunRecord, all_intervals, image_bootstrap, mean_metrics
from .beyond import DARK, split_variant, variant_records
from .figures import write_diagnostic_figures, write_figures, write_mechanism_figure, write_table6_figure
from .verdict import MECHANISM, MECHANISM_RUNS
from .findings import build_findings, table5_note
from .summary import build_summary
from .tables import build_tables, write_tables

log = logging.getLogger(__name__)


def is_report_metric(key: str) -> bool:
    """Whether the report reads metric ``key`` of a run: the evaluation's metrics (``coco_val/AP``,
    ``diag/err.nose``) and the last epoch's validation values (``val/pos_share``); not the training
    loop's own curves (``train/loss``, ``train/lr``) nor the tune split's per-epoch aggregates
    (``tune/AP``), only its per-joint and per-pair values (``tune/joint_err.nose``)."""
    group, name = split_key(key)
    return bool(group) and group != TRAIN and (group != "tune" or "." in name)


def collect(tracking_uri: str, experiment: str, run_names: list[str], seeds: list[int]
            ) -> tuple[dict[str, RunRecord], dict[str, dict[str, Any]], pd.DataFrame]:
    """(per-seed records per run, run info per run, the selected MLflow rows: one per run and seed).

    An MLflow run belongs to row ``tags.row`` and seed ``tags.seed``; of several finished, evaluated runs
    of one (row, seed) the newest counts. Runs without those tags (older store layouts) are ignored.
    """
    df = finished_runs(tracking_uri, experiment)
    records: dict[str, RunRecord] = {}
    info: dict[str, dict[str, Any]] = {}
    if df.empty or not {"tags.row", "tags.seed"} <= set(df.columns):
        return records, info, df.iloc[0:0]
    wanted = {str(s) for s in seeds}
    df = df[df["tags.row"].isin(run_names) & df["tags.seed"].isin(wanted)]
    df = df.drop_duplicates(["tags.row", "tags.seed"], keep="first")
    metric_cols = [c for c in df.columns if c.startswith("metrics.") and is_report_metric(c[len("metrics."):])]
    for _, row in df.iterrows():
        name, seed = row["tags.row"], int(row["tags.seed"])
        rec = records.setdefault(name, RunRecord(name))
        rec.metrics[seed] = {c[len("metrics."):]: float(row[c]) for c in metric_cols if pd.notna(row[c])}
        rec.run_ids[seed] = row["run_id"]
        if name not in info:  # backbone and input size are the same for every seed of a run
            info[name] = _run_info(row)
        _testdev(name, row, rec.metrics[seed], info[name])
    for name, rec in records.items():
        info[name]["mlflow_run_id"] = ", ".join(rec.run_ids[s] for s in rec.seeds)
        info[name]["seeds"] = rec.seeds
    return records, info, df


def _param(row: pd.Series, key: str) -> str:
    v = row.get(f"params.{key}")
    return v if isinstance(v, str) else ""


def _run_info(row: pd.Series) -> dict[str, Any]:
    """Backbone and input size as the run logged them (blank when a param is missing)."""
    size = _param(row, "data.input_size").strip("[]").split(",")
    width = _param(row, "model.width")
    return {"backbone": _param(row, "model.backbone") + (f" ×{width}" if width else ""),
            "input_size": f"{size[1].strip()}×{size[0].strip()}" if len(size) == 2 else ""}


def _tag(row: pd.Series, key: str) -> str:
    v = row.get(f"tags.{key}")
    return v if isinstance(v, str) else ""


def _testdev(name: str, row: pd.Series, metrics: dict[str, float], info: dict[str, Any]) -> None:
    """Test-dev bookkeeping: flag a submission awaiting the server's scores (Table 2 says so), and
    drop server scores that belong to an earlier results file (the run was evaluated again since);
    the same for each decoding variant's own submission (DARK)."""
    info["testdev_submitted"] = info.get("testdev_submitted", False) or bool(_tag(row, coco_server.TAG_SUBMISSION))
    for variant in (None, DARK):
        def tag(t: str) -> str:
            return _tag(row, coco_server.variant_tag(t, variant))

        results_sha = tag(coco_server.TAG_RESULTS_SHA)
        if tag(coco_server.TAG_SOURCE) == "server" and results_sha and tag(coco_server.TAG_SCORED_SHA) != results_sha:
            log.warning("%s: the COCO server's test-dev scores%s are for an earlier results file; upload %s "
                        "and load the new scores (python -m pipeline testdev-scores)", name,
                        f" ({variant})" if variant else "", tag(coco_server.TAG_SUBMISSION))
            prefix = metric_key(coco_server.variant_prefix(variant), "")
            for k in [k for k in metrics if k.startswith(prefix)]:
                del metrics[k]


def curves(tracking_uri: str, selected: pd.DataFrame) -> dict[str, dict[int, pd.DataFrame]]:
    """Per-epoch train loss and validation metric of every selected run, per seed."""
    out: dict[str, dict[int, pd.DataFrame]] = {}
    for _, row in selected.iterrows():
        run = row["tags.row"]
        key = metric_key("val", "AP" if run.startswith("coco_") else "PCKh")
        loss = dict(metric_history(tracking_uri, row["run_id"], metric_key(TRAIN, "loss")))
        val = dict(metric_history(tracking_uri, row["run_id"], key))
        epochs = sorted(set(loss) | set(val))
        out.setdefault(run, {})[int(row["tags.seed"])] = pd.DataFrame(
            {"epoch": epochs, "train_loss": [loss.get(e) for e in epochs], "val_metric": [val.get(e) for e in epochs]})
    return out


def mechanism_curves(tracking_uri: str, selected: pd.DataFrame) -> dict[str, dict[str, pd.DataFrame]]:
    """Per-epoch mechanism diagnostics (``val/pos_share`` …) of the verdict's HRNet-W32 COCO runs per loss:
    run -> metric -> (epoch, seed, value) rows; runs trained before the diagnostics existed have none."""
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for _, row in selected[selected["tags.row"].isin(MECHANISM_RUNS)].iterrows():
        for key, _ in MECHANISM:
            hist = metric_history(tracking_uri, row["run_id"], key)
            if hist:
                rows = pd.DataFrame(hist, columns=["epoch", "value"]).assign(seed=int(row["tags.seed"]))
                per = out.setdefault(row["tags.row"], {})
                per[key] = pd.concat([per.get(key, rows.iloc[0:0]), rows], ignore_index=True)
    return out


def build_report(*, profile: str, tracking_uri: str, experiment: str, run_names: list[str], seeds: list[int],
                 out_dir: Path) -> list[Path]:
    """Tables 1–6, findings.md, figures and measured.json from the runs of ``seeds``."""
    records, info, selected = collect(tracking_uri, experiment, run_names, seeds)
    missing = sorted(set(run_names) - set(records))
    if missing:
        log.warning("no evaluated MLflow run for: %s (their rows say 'not run')", ", ".join(missing))
    for name, rec in variant_records(records).items():  # "+ DARK" lines: the same runs decoded otherwise
        records[name] = rec
        info[name] = dict(info[split_variant(name)[0]])
    measured = {run: mean_metrics(rec) for run, rec in records.items()}
    paths = Paths(profile)
    bootstrap = image_bootstrap(paths)
    intervals = all_intervals(records, bootstrap=bootstrap)
    notes = {"table5": [table5_note(records, intervals["table5"], paths.eval_dir)]} if records else {}
    tables = build_tables(measured, profile=profile, run_info=info, intervals=intervals, notes=notes)
    run_curves = curves(tracking_uri, selected) if not selected.empty else {}
    # every file is made in a temporary folder first and moved into out_dir only when all are complete
    with io.temporary_dir(Path(out_dir) / "report") as stage:
        staged = write_tables(tables, stage, profile=profile)
        findings, summary = stage / "findings.md", stage / "summary.md"
        text = build_findings(profile=profile, records=records, intervals=intervals, curves=run_curves, seeds=seeds,
                              bootstrap=bootstrap, run_dir=paths.eval_dir)
        io.write_text(findings, text)
        io.write_text(summary, build_summary(profile, text))
        staged[-1:-1] = [findings, summary]
        if run_curves:
            staged += write_figures(run_curves, stage)
            staged += write_diagnostic_figures(records, run_curves, stage)
            staged += write_table6_figure(intervals["table6"], stage)
            staged += write_mechanism_figure(mechanism_curves(tracking_uri, selected), stage)
        io.write_json(stage / "measured.json", {
            "profile": profile, "experiment": experiment, "seeds": seeds, "runs": measured, "run_info": info,
            "per_seed": {run: {str(s): m for s, m in rec.metrics.items()} for run, rec in records.items()}})
        io.publish(stage, out_dir)
    return [Path(out_dir) / p.relative_to(stage) for p in staged]
