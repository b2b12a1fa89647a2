"""COCO test-dev: the zip for the evaluation server, the parser of the scores it returns, and
`testdev-scores` → MLflow → Table 2 end to end on a tiny MLflow store."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from pipeline.errors import PipelineError
from pipeline.metrics import coco_server
from pipeline.metrics.coco import STAT_NAMES, write_results

ROOT = Path(__file__).resolve().parent.parent
RUN = "coco_hrnet_w32_hdm"
STATS = [0.760, 0.925, 0.833, 0.722, 0.821, 0.810, 0.950, 0.870, 0.770, 0.870]
SUMMARY = "\n".join(
    f" Average {'Precision' if k.startswith('AP') else 'Recall   '}  ({k[:2]}) @[ IoU={iou} | area={area} | "
    f"maxDets= 20 ] = {v:.3f}"
    for k, v, iou, area in zip(STAT_NAMES, STATS, ["0.50:0.95", "0.50     ", "0.75     ", "0.50:0.95", "0.50:0.95"] * 2,
                               ["   all", "   all", "   all", "medium", " large"] * 2))


def _results(eval_dir: Path, run: str = RUN) -> Path:
    preds = [{"image_id": i, "keypoints": [[10.0 + j, 20.0, 0.9] for j in range(17)], "score": 0.5 + i / 10}
             for i in range(3)]
    path = eval_dir / coco_server.results_name(run)
    write_results(preds, path)
    return path


# ----------------------------------------------------------------------------- submission
def test_submission_zip_holds_exactly_the_results_file(tmp_path):
    results = _results(tmp_path)
    zip_path, tags = coco_server.package_testdev(tmp_path, RUN, scored=False)
    assert zip_path == tmp_path / "submission" / f"person_keypoints_test-dev2017_{RUN}_results.zip"
    with zipfile.ZipFile(zip_path) as zf:
        assert zf.namelist() == [f"person_keypoints_test-dev2017_{RUN}_results.json"]
        data = zf.read(zf.namelist()[0])
    assert data == results.read_bytes() and json.loads(data) == json.loads(results.read_text())
    assert tags == {"testdev_submission": str(zip_path), "testdev_results_sha256": coco_server.sha256_file(results)}
    first = zip_path.read_bytes()
    _, tags2 = coco_server.package_testdev(tmp_path, RUN, scored=True)  # deterministic, overwritten in place
    assert zip_path.read_bytes() == first and tags2["testdev_source"] == "ground-truth"
    assert sorted(p.name for p in zip_path.parent.iterdir()) == [zip_path.name]  # no temporaries


def test_submission_without_results_file_errors(tmp_path):
    with pytest.raises(PipelineError, match=f"person_keypoints_test-dev2017_{RUN}_results.json"):
        coco_server.package_testdev(tmp_path, RUN, scored=False)
    assert not (tmp_path / "submission").exists() or not any((tmp_path / "submission").iterdir())


# ----------------------------------------------------------------------------- scores
def _write(tmp_path: Path, name: str, content) -> Path:
    p = tmp_path / name
    p.write_text(content if isinstance(content, str) else json.dumps(content))
    return p


def test_three_score_formats_parse_to_the_same_metrics(tmp_path):
    expected = dict(zip(STAT_NAMES, STATS))
    named = {"AP": 0.760, "ap50": 0.925, "AP75": 0.833, "APm": 0.722, "APl": 0.821,
             "AR": 0.810, "AR50": 0.950, "ar75": 0.870, "ARM": 0.770, "ARL": 0.870}
    files = {
        "named.json": named,
        "stats.json": STATS,
        "summary.txt": "Accumulating evaluation results...\n" + SUMMARY + "\n",
        "evalai.json": {"result": [{"test-dev": named}], "submission_id": 7},
        "wrapped_stats.json": {"stats": STATS},
        "kv.txt": "\n".join(f"{k}: {v}" for k, v in named.items()),
    }
    for name, content in files.items():
        got = coco_server.parse_server_scores(_write(tmp_path, name, content))
        assert got == pytest.approx(expected), name
        assert list(got) == list(STAT_NAMES)


def test_percent_scale_is_detected(tmp_path):
    pct = coco_server.parse_server_scores(_write(tmp_path, "p.json", {"AP": 76.0, "AP50": 92.5, "APM": 72.2,
                                                                      "APL": 82.1, "AR": 81.0, "AP75": 83.3}))
    assert pct == pytest.approx({"AP": 0.76, "AP50": 0.925, "AP75": 0.833, "APM": 0.722, "APL": 0.821, "AR": 0.81})
    frac = coco_server.parse_server_scores(_write(tmp_path, "f.json", [0.5] * 9 + [-1]))  # -1: undefined, skipped
    assert frac == pytest.approx({k: 0.5 for k in STAT_NAMES[:9]})
    assert coco_server.parse_server_scores(_write(tmp_path, "l.json", [76.0] * 10))["ARL"] == pytest.approx(0.76)


@pytest.mark.parametrize("name, content, field", [
    ("str.json", {"AP": "high", "AR": 0.5}, "'AP'"),
    ("short.json", [0.5] * 9, "stats"),
    ("broken.json", '{"AP": 0.7,', "not valid JSON"),
    ("range.json", {"AP": 150.0}, "AP"),
    ("noap.json", {"AR": 0.5, "AP50": 0.9}, "AP missing"),
    ("other.json", {"accuracy": 0.5}, "no COCO keypoint metric"),
    ("bool.json", {"AP": True}, "'AP'"),
    ("empty.txt", "nothing here\n", "COCOeval summary"),
    ("bbox.txt", " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.410\n", "line 1"),
])
def test_malformed_scores_file_names_file_and_field(tmp_path, name, content, field):
    path = _write(tmp_path, name, content)
    with pytest.raises(PipelineError) as err:
        coco_server.parse_server_scores(path)
    msg = str(err.value)
    assert str(path) in msg and field in msg and "\n" not in msg


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from pipeline.config import experiment_name, load_params
    from pipeline.tracking import init_store

    d = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{d / 'mlflow.db'}"
    params = load_params(ROOT / "params.yaml", "paper")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)  # the project folder: MLflow puts the artifacts under the working directory
        init_store(uri, experiment_name(params))
    return uri, experiment_name(params), d


def _evaluated_run(uri: str, exp: str, eval_dir: Path) -> str:
    """An MLflow run as the evaluation leaves it on the paper profile: val metrics, no test-dev ones."""
    from pipeline.tracking import open_run

    _results(eval_dir)
    _, tags = coco_server.package_testdev(eval_dir, RUN, scored=False)
    with open_run(uri, exp, run_name=f"{RUN}-seed0", tags={"row": RUN, "seed": "0"}) as mlflow:
        mlflow.log_params({"data.input_size": "[288, 384]", "model.backbone": "hrnet_w32"})
        mlflow.log_metrics({f"coco_val/{k}": 0.7 for k in STAT_NAMES})
        mlflow.set_tags({**tags, "evaluated": "true", "profile": "paper"})
        return mlflow.active_run().info.run_id


def _table2_line(reports: Path) -> tuple[pd.Series, list[str]]:
    csv = pd.read_csv(reports / "table2.csv")
    line = csv[(csv["run"] == RUN) & (csv["source"] == "measured")].iloc[0]
    md = [l for l in (reports / "table2.md").read_text().splitlines() if f"`{RUN}`" in l and "| measured |" in l]
    return line, [c.strip() for c in md[0].strip().strip("|").split("|")]


def test_server_scores_fill_table2(store, monkeypatch, capsys):
    from pipeline.cli import main

    uri, exp, tmp_path = store
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    eval_dir = tmp_path / "results" / "paper" / "eval" / RUN / "seed0"
    run_id = _evaluated_run(uri, exp, eval_dir)
    cli = ["--params", str(ROOT / "params.yaml"), "--profile", "paper"]

    # before the server's scores: Table 2 says so explicitly
    assert main(cli + ["report"]) == 0
    reports = tmp_path / "reports" / "paper"
    line, cells = _table2_line(reports)
    assert line["status"] == "submitted, no scores yet" and cells[7:] == ["submitted, no scores yet"] * 6

    # a malformed scores file: one line naming it, nothing logged
    bad = _write(tmp_path, "bad.json", {"AP": "x"})
    capsys.readouterr()
    assert main(cli + ["testdev-scores", "--run", RUN, "--scores", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "bad.json" in err[0] and "'AP'" in err[0]
    # a run without an evaluated MLflow run
    assert main(cli + ["testdev-scores", "--run", "coco_hrnet_w48_hdm", "--scores", str(bad)]) == 1

    scores = _write(tmp_path, "result.txt", SUMMARY)
    assert main(cli + ["testdev-scores", "--run", RUN, "--scores", str(scores)]) == 0
    import mlflow

    r = mlflow.get_run(run_id)
    assert r.data.metrics["coco_testdev/AP"] == pytest.approx(0.76) and r.data.tags["testdev_source"] == "server"
    assert r.data.metrics["coco_val/AP"] == 0.7 and r.info.status == "FINISHED"
    copy = json.loads((eval_dir / "testdev_server_scores.json").read_text())
    assert copy["mlflow_run_id"] == run_id and copy["metrics"]["coco_testdev/AR"] == pytest.approx(0.81)

    assert main(cli + ["report"]) == 0
    line, cells = _table2_line(reports)
    assert line["status"] == "ok"
    assert [line[m] for m in ("AP", "AP50", "AP75", "APM", "APL", "AR")] == [76.0, 92.5, 83.3, 72.2, 82.1, 81.0]
    assert cells[7:] == ["76.0", "92.5", "83.3", "72.2", "82.1", "81.0"]

    # evaluated again with different test-dev results: the old scores are dropped
    mlflow.tracking.MlflowClient().set_tag(run_id, "testdev_results_sha256", "0" * 64)
    assert main(cli + ["report"]) == 0
    assert _table2_line(reports)[0]["status"] == "submitted, no scores yet"


def test_dark_submission_and_its_server_scores_fill_the_dark_line(store, monkeypatch, capsys):
    """An MSE run submits its DARK decoding as a zip of its own; `testdev-scores --variant dark` logs
    the server's scores as coco_testdev_dark.*, and Table 2's "+ DARK" line shows them."""
    from pipeline.cli import main
    from pipeline.tracking import open_run

    uri, exp, tmp_path = store
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mse = "coco_hrnet_w32_mse"
    eval_dir = tmp_path / "results" / "paper" / "eval" / mse / "seed0"
    _results(eval_dir, mse)
    _results(eval_dir, f"{mse}_dark")
    tags = {}
    for variant in (None, "dark"):
        zip_path, t = coco_server.package_testdev(eval_dir, mse, scored=False, variant=variant)
        tags.update(t)
    assert zip_path.name == f"person_keypoints_test-dev2017_{mse}_dark_results.zip"
    assert set(tags) == {"testdev_submission", "testdev_results_sha256", "testdev_submission_dark",
                         "testdev_results_sha256_dark"}
    with open_run(uri, exp, run_name=f"{mse}-seed0", tags={"row": mse, "seed": "0"}) as mlflow:
        mlflow.log_metrics({f"coco_val/{k}": 0.7 for k in STAT_NAMES})
        mlflow.set_tags({**tags, "evaluated": "true", "profile": "paper"})
        run_id = mlflow.active_run().info.run_id
    cli = ["--params", str(ROOT / "params.yaml"), "--profile", "paper"]
    scores = _write(tmp_path, "result.txt", SUMMARY)
    capsys.readouterr()
    assert main(cli + ["testdev-scores", "--run", "coco_hrnet_w32_hdm", "--variant", "dark", "--scores",
                       str(scores)]) == 1
    assert "--variant dark" in capsys.readouterr().err
    assert main(cli + ["testdev-scores", "--run", mse, "--variant", "dark", "--scores", str(scores)]) == 0
    import mlflow as mlf

    r = mlf.get_run(run_id)
    assert r.data.metrics["coco_testdev_dark/AP"] == pytest.approx(0.76) and "coco_testdev/AP" not in r.data.metrics
    assert r.data.tags["testdev_source_dark"] == "server" and "testdev_source" not in r.data.tags
    assert (eval_dir / "testdev_server_scores_dark.json").is_file()
    assert main(cli + ["report"]) == 0
    csv = pd.read_csv(tmp_path / "reports" / "paper" / "table2.csv")
    dark = csv[(csv["run"] == f"{mse}+dark") & (csv["source"] == "measured")].iloc[0]
    plain = csv[(csv["run"] == mse) & (csv["source"] == "measured")].iloc[0]
    assert dark["status"] == "ok" and dark["AP"] == 76.0
    assert plain["status"] == "submitted, no scores yet"
