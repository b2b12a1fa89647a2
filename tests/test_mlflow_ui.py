"""What the MLflow UI shows of the project's store: an experiment that opens on its runs table, metric
names grouped into one chart section per split or family (``coco_val/AP``: the same names in MLflow,
metrics.json and headline.json), records of older versions read under today's names, and each run's
datasets as inputs (the runs table's Dataset column)."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from pipeline.io import sha256_file
from pipeline.tracking import init_store, metric_history, open_run
from pipeline.tracking import mlflow_store as ms
from pipeline.tracking.datasets import DIGEST_CHARS, EVALUATION, TRAINING, DatasetUse, log_datasets
from pipeline.tracking.metric_names import canonical_key, canonical_metrics, legacy_key

ROOT = Path(__file__).resolve().parent.parent
RUN = "coco_hrnet_w32_mse"
EXPERIMENT = "hdm-benchmark-smoke"


def _client(uri: str):
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.tracking.MlflowClient()


def _kind(uri: str, experiment: str) -> str | None:
    return _client(uri).get_experiment_by_name(experiment).tags.get(ms.EXPERIMENT_KIND_TAG)


# ------------------------------------------------------------------------------ the experiment's kind
def test_a_new_experiment_opens_on_the_runs_table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    init_store(uri, EXPERIMENT)
    assert _kind(uri, EXPERIMENT) == ms.MODEL_TRAINING_KIND == "custom_model_development"
    # an experiment a stage creates itself (a store shared by profiles) is marked the same way
    with open_run(uri, "hdm-benchmark-other", run_name="r"):
        pass
    assert _kind(uri, "hdm-benchmark-other") == ms.MODEL_TRAINING_KIND


def test_an_older_experiment_gets_the_kind_and_a_chosen_one_is_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    init_store(uri, "placeholder")  # the store; then experiments as earlier versions made them
    client = _client(uri)
    client.create_experiment(EXPERIMENT)
    client.create_experiment("chosen", tags={ms.EXPERIMENT_KIND_TAG: "genai_development"})
    assert _kind(uri, EXPERIMENT) is None
    init_store(uri, EXPERIMENT)
    assert _kind(uri, EXPERIMENT) == ms.MODEL_TRAINING_KIND
    with open_run(uri, "chosen", run_name="r"):
        pass
    assert _kind(uri, "chosen") == "genai_development"


# ------------------------------------------------------------------------------ metric names
@pytest.mark.parametrize("old, new", [
    ("coco_val.AP", "coco_val/AP"), ("coco_val_dark.AR", "coco_val_dark/AR"), ("coco_testdev.AP50", "coco_testdev/AP50"),
    ("mpii_val.Mean_at_0.1", "mpii_val/Mean_at_0.1"), ("mpii_tune.Mean", "mpii_tune/Mean"),
    ("diag.err.nose", "diag/err.nose"), ("diag.sep.left_eye-right_eye", "diag/sep.left_eye-right_eye"),
    ("val_consistency.n_people", "val_consistency/n_people"),
    ("train_loss", "train/loss"), ("lr", "train/lr"), ("images_per_s", "train/images_per_s"),
    ("val_AP", "val/AP"), ("tune_AP", "tune/AP"), ("val_pos_share", "val/pos_share"),
    ("val_joint_err.nose", "val/joint_err.nose"), ("coco_val/AP", "coco_val/AP"),
])
def test_older_names_read_as_todays(old, new):
    assert canonical_key(old) == new
    if old != new:
        assert legacy_key(new) == old


def test_a_record_with_both_names_keeps_todays():
    assert canonical_metrics({"coco_val.AP": 0.1, "coco_val/AP": 0.2, "diag.median_err": 1.0}) == {
        "coco_val/AP": 0.2, "diag/median_err": 1.0}


def test_search_columns_of_old_and_new_runs_merge_into_one_per_metric():
    import pandas as pd

    df = pd.DataFrame({"run_id": ["new", "old"], "metrics.coco_val/AP": [0.5, None],
                       "metrics.coco_val.AP": [None, 0.4], "metrics.train_loss": [None, 2.0]})
    out = ms.canonical_metric_columns(df)
    assert sorted(out.columns) == ["metrics.coco_val/AP", "metrics.train/loss", "run_id"]
    assert out["metrics.coco_val/AP"].tolist() == [0.5, 0.4] and out["run_id"].tolist() == ["new", "old"]


def test_a_curve_logged_under_its_older_name_is_found(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    init_store(uri, EXPERIMENT)
    with open_run(uri, EXPERIMENT, run_name="old") as mlflow:
        mlflow.log_metric("train_loss", 2.0, step=1)
        mlflow.log_metric("train_loss", 1.5, step=2)
        run_id = mlflow.active_run().info.run_id
    assert metric_history(uri, run_id, "train/loss") == [(1, 2.0), (2, 1.5)]


# ------------------------------------------------------------------------------ dataset inputs
def test_datasets_are_logged_once_per_run_with_the_manifest_digest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    init_store(uri, EXPERIMENT)
    manifest = tmp_path / "coco.manifest.json"
    manifest.write_text(json.dumps({"files": {"a.json": {"bytes": 1}}}))
    uses = [DatasetUse("coco", "train", manifest, TRAINING), DatasetUse("coco", "val", manifest, EVALUATION),
            DatasetUse("mpii", "val", tmp_path / "missing.manifest.json", EVALUATION)]
    with open_run(uri, EXPERIMENT, run_name="r") as mlflow:
        assert log_datasets(mlflow, uses) == ["coco/train", "coco/val"]  # no manifest, no input
        assert log_datasets(mlflow, uses) == []  # a resumed run or a second evaluation adds nothing
        run_id = mlflow.active_run().info.run_id
    inputs = _client(uri).get_run(run_id).inputs.dataset_inputs
    sha = sha256_file(manifest)
    assert sorted((i.dataset.name, i.dataset.digest, i.tags[0].value) for i in inputs) == [
        ("coco/train", sha[:DIGEST_CHARS], TRAINING), ("coco/val", sha[:DIGEST_CHARS], EVALUATION)]
    assert json.loads(inputs[0].dataset.source)["manifest_sha256"] == sha


# ------------------------------------------------------------------------------ a smoke run, end to end
@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """A scratch smoke project (cwd while the tests run): COCO data, the store, :data:`RUN` trained for one
    epoch and evaluated."""
    from pipeline.config import load_params, resolve_run
    from pipeline.data.prepare import prepare_dataset
    from pipeline.engine.evaluate import evaluate_run
    from pipeline.engine.train import train_run

    d = tmp_path_factory.mktemp("mlflow_ui")
    p = load_params(ROOT / "params.yaml", "smoke")
    uri = f"sqlite:///{d / 'mlflow.db'}"
    (d / "pretrained").symlink_to(ROOT / "pretrained")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        prepare_dataset(p, "smoke", "coco", progress=False)
        init_store(uri, EXPERIMENT)
        cfg = resolve_run(p, RUN, "smoke")
        cfg["train"]["epochs"] = 1
        train_run(cfg, tracking_uri=uri, experiment=EXPERIMENT, progress=False)
        result = evaluate_run(cfg, tracking_uri=uri, experiment=EXPERIMENT, progress=False)
        yield d, cfg, uri, result


def test_mlflow_metrics_json_and_headline_use_the_same_grouped_names(smoke):
    from pipeline.config import Paths

    d, cfg, uri, result = smoke
    logged = _client(uri).get_run(result["mlflow_run_id"]).data.metrics
    written = json.loads(Paths("smoke").eval_metrics(RUN, 0).read_text())["metrics"]
    headline = json.loads((Paths("smoke").eval_dir(RUN, 0) / "headline.json").read_text())
    final = {k for k, v in written.items() if v is not None}  # MLflow takes no NaN
    assert final <= set(logged) and set(headline) <= set(written) and "coco_val/AP" in headline
    assert all("/" in k for k in logged), [k for k in logged if "/" not in k]
    assert {"train/loss", "train/lr", "val/AP", "diag/median_err", "coco_val_gtbox/AP"} <= set(logged)


def test_each_run_has_its_datasets_with_the_manifest_digest(smoke):
    from pipeline.config import Paths
    from pipeline.engine.evaluate import evaluate_run

    d, cfg, uri, result = smoke
    evaluate_run(cfg, tracking_uri=uri, experiment=EXPERIMENT, progress=False)  # again: nothing added
    digest = sha256_file(Paths("smoke").manifest("coco"))[:DIGEST_CHARS]
    inputs = _client(uri).get_run(result["mlflow_run_id"]).inputs.dataset_inputs
    assert sorted((i.dataset.name, i.dataset.digest, i.tags[0].value) for i in inputs) == [
        ("coco/test-dev", digest, EVALUATION), ("coco/train", digest, TRAINING), ("coco/val", digest, EVALUATION)]


def _to_older_names(db: Path) -> None:
    """Rename every metric of the store to the name an earlier version logged it under."""
    con = sqlite3.connect(db)
    with con:
        for table in ("metrics", "latest_metrics"):
            for (key,) in con.execute(f"SELECT DISTINCT key FROM {table}").fetchall():
                con.execute(f"UPDATE {table} SET key = ? WHERE key = ?", (legacy_key(key), key))
    con.close()


def test_a_store_with_older_names_reads_into_the_same_report_values(smoke, tmp_path):
    from pipeline.report.build import collect, curves

    d, cfg, uri, result = smoke
    records, _, selected = collect(uri, EXPERIMENT, [RUN], [0])
    old_db = tmp_path / "mlflow.db"
    shutil.copy(d / "mlflow.db", old_db)
    _to_older_names(old_db)
    old_uri = f"sqlite:///{old_db}"
    assert "coco_val.AP" in _client(old_uri).get_run(result["mlflow_run_id"]).data.metrics
    old_records, _, old_selected = collect(old_uri, EXPERIMENT, [RUN], [0])
    assert old_records[RUN].metrics == records[RUN].metrics and "coco_val/AP" in records[RUN].metrics[0]
    new_curve, old_curve = curves(uri, selected)[RUN][0], curves(old_uri, old_selected)[RUN][0]
    assert old_curve.equals(new_curve) and new_curve["train_loss"].notna().all()


class _RacingClient:
    """``log_inputs`` fails ``fails`` times with ``error`` (another run inserting the same dataset row),
    then succeeds."""

    def __init__(self, fails: int, error: str) -> None:
        self.fails, self.error, self.calls = fails, error, 0

    def log_inputs(self, run_id: str, datasets: list) -> None:
        self.calls += 1
        if self.calls <= self.fails:
            raise RuntimeError(self.error)


def test_a_dataset_row_inserted_by_another_run_at_once_is_linked_on_the_next_try():
    from pipeline.tracking import datasets

    race = 'BAD_REQUEST: (psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint "dataset_pk"'
    client = _RacingClient(1, race)
    datasets._log_inputs(client, "r1", ["coco/train"])
    assert client.calls == 2
    other = _RacingClient(1, "RESOURCE_DOES_NOT_EXIST: run r1")
    with pytest.raises(RuntimeError, match="RESOURCE_DOES_NOT_EXIST"):
        datasets._log_inputs(other, "r1", ["coco/train"])
    assert other.calls == 1
